{
PS1= PS2= PS0= PS4='+ ' PROMPT_COMMAND=
set +o history +H +m
unset HISTFILE MAIL MAILPATH MAILCHECK
shopt -s expand_aliases
__tether_rc=0 __tether_cur= __tether_xt= __tether_c=
__tether_s() { __tether_cur=$1; }
__tether_b() { builtin printf 'S %s\0' "$__tether_cur" >&3; }
__tether_ret() { return "$1"; }
__tether_p() {
  local __tether_x=$?
  case $- in *x*) __tether_xt=1; set +x ;; *) __tether_xt= ;; esac
  __tether_c=
  if [[ -n $__tether_cur ]]; then
    builtin printf 'E %s %s %s\0' "$__tether_cur" "$__tether_x" "${PWD-}" >&3
    __tether_rc=$__tether_x __tether_cur=
  else
    builtin printf 'R\0' >&3
  fi
}
readonly -f __tether_s __tether_b __tether_ret __tether_p
PROMPT_COMMAND=__tether_p
readonly PROMPT_COMMAND
}
