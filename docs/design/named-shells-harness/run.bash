IFS= builtin read -r -d '' __tether_c <"$__tether_D/$__tether_cur.sh"; if [[ -n $__tether_xt ]]; then __tether_c="set -x;$__tether_c"; fi; __tether_ret "$__tether_rc"; builtin eval "$__tether_c"
