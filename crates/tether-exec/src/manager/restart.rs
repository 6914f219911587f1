//! Handing the commands over to a re-executed daemon, and taking them
//! over in it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::Manager;
use super::budget::{Reservation, screen_bytes};
use crate::command::{self};
use crate::handover::Handover;
use crate::shell::ShellHandle;
use crate::spec::ManagerConfig;

/// Ring bytes below which [`Manager::precopy`] writes nothing ahead.
const PRECOPY_FROM: usize = 8 << 20;

impl Manager {
    /// Says that a handover is coming: from now on clients going away (the
    /// restart closes every connection) do not trigger
    /// `kill_on_disconnect`. Call it before closing the connections.
    pub fn begin_handover(&self) {
        self.inner.restarting.store(true, Ordering::SeqCst);
    }

    /// Writes every ring's bytes for a handover about to begin, while the
    /// commands run and clients are served: the handover then writes only
    /// what came since (a quarter of a gigabyte with a thousand full rings
    /// took most of the time the daemon did not serve). Nothing is written
    /// below [`PRECOPY_FROM`]; a failure only means the handover writes
    /// everything itself.
    pub async fn precopy(&self) {
        // Rings still being copied off the previous handover's mapping (a
        // restart right after a restart) would be written ahead from it and
        // then again from their copies: the copying ends first.
        let reowning = self.inner.reowning.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = reowning {
            let _ = task.await;
        }
        let chunks: Vec<bytes::Bytes> =
            self.inner.commands.iter().flat_map(|e| e.value().ring_chunks()).collect();
        if chunks.iter().map(|c| c.len()).sum::<usize>() < PRECOPY_FROM {
            return;
        }
        match tokio::task::spawn_blocking(move || crate::handover::Precopy::write(chunks)).await {
            Ok(Ok(mut p)) => {
                // The rings take the written copies, and their own are
                // freed and given back now, while serving: an exec unmaps
                // what a process still has page by page, with the process
                // stopped (a thousand rings' quarter gigabyte was a seventh
                // of the time not serving).
                for e in self.inner.commands.iter() {
                    e.value().rebase_rings(|c| p.mapped(c));
                }
                p.release_held();
                let _ = tokio::task::spawn_blocking(crate::sys::release_free_memory).await;
                *self.inner.precopy.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p);
            }
            Ok(Err(e)) => tracing::warn!("ring bytes not written ahead of the handover: {e}"),
            Err(e) => tracing::warn!("ring bytes not written ahead of the handover: {e}"),
        }
    }

    /// Stops every command without touching its process and returns their
    /// state and fds, for the next daemon ([`Manager::resume`], see the
    /// `handover` module). Idle named shells are handed over too; a shell
    /// that runs or queues a command is closed first, and its commands
    /// handed over finished (`shell_closed`). The manager accepts nothing
    /// afterwards.
    pub async fn handover(&self) -> Handover {
        let inner = &self.inner;
        self.begin_handover();
        let shells: Vec<ShellHandle> = inner.shells.iter().map(|r| r.value().clone()).collect();
        let (mut frozen_shells, mut shell_fds) = (Vec::new(), Vec::new());
        for sh in &shells {
            if let Some((frozen, fds)) = sh.freeze().await {
                frozen_shells.push(frozen);
                shell_fds.extend(fds);
                continue;
            }
            sh.close().await;
            for id in sh.command_ids() {
                if let Ok(h) = self.get(&id) {
                    // Its end comes once the shell's session is gone.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), h.wait()).await;
                }
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _ = inner.handover.set(tx);
        inner.cancel();
        inner.tracker.close();
        inner.tracker.wait().await;
        let (mut commands, mut fds) = (Vec::new(), Vec::new());
        while let Ok((frozen, owned)) = rx.try_recv() {
            commands.push(frozen);
            fds.extend(owned);
        }
        fds.extend(shell_fds);
        tracing::info!(
            commands = commands.len(),
            shells = frozen_shells.len(),
            fds = fds.len(),
            "commands ready to hand over"
        );
        let mut h = Handover::new(commands, frozen_shells, fds);
        if let Some(p) = inner.precopy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            h.use_precopy(p);
        }
        h
    }

    /// A manager that takes over the commands of a [`Handover`] (their
    /// fds are taken out of it; fds added by the caller stay). Limits are
    /// not applied to them: they were admitted before.
    pub fn resume(cfg: ManagerConfig, kill_on_shutdown: bool, h: &mut Handover) -> Manager {
        let m = Manager::create(cfg, kill_on_shutdown);
        let inner = &m.inner;
        let mut resumed = Vec::new();
        for frozen in std::mem::take(&mut h.commands) {
            // A terminal has one output stream, so one ring's worth.
            let rings = if frozen.size.is_some() { 1 } else { 2 };
            let bytes = rings * frozen.rings[0].cap;
            let screen = frozen.size.map_or(0, |(size, _)| screen_bytes(size));
            inner.count.fetch_add(1, Ordering::SeqCst);
            inner.committed.fetch_add(bytes + screen, Ordering::SeqCst);
            let reservation = Reservation::new(bytes, screen, inner);
            // Its fds are registered with the actors' runtime (see `launch`).
            let (handle, actor) = {
                let _actors = frozen.size.is_none().then(super::actors::enter);
                command::thaw(frozen, h, reservation, inner.contain.clone())
            };
            if handle.exit().is_some() {
                handle.shared.settle_reservation();
            }
            if let Some(key) = &handle.shared.ident.request_key {
                inner.keys.insert(key.clone(), handle.id().to_owned());
            }
            tracing::debug!(command = handle.id(), pid = handle.pid(), "command taken over");
            m.launch(&handle, actor);
            resumed.push(handle);
        }
        let mut shell_pids = std::collections::HashSet::new();
        for frozen in std::mem::take(&mut h.shells) {
            let (name, pid) = (frozen.name().to_owned(), frozen.pid());
            match crate::shell::thaw(frozen, h) {
                Ok(started) => {
                    tracing::info!(shell = %name, pid, "shell taken over");
                    shell_pids.insert(pid);
                    m.run_shell(started);
                }
                Err(e) => {
                    // Its pipes are gone: nothing can drive it any more.
                    tracing::error!(shell = %name, pid, "cannot take the shell over: {e}; killing it");
                    crate::shell::kill_session(pid);
                }
            }
        }
        if kill_on_shutdown {
            let kept: std::collections::HashSet<String> = resumed.iter().map(|h| h.id().to_owned()).collect();
            inner.contain.sweep_crashed_leaves(&kept);
            // The processes are looked at once the daemon serves again: each
            // look reads a process's environment from its memory (a seventh
            // of a 1000-command takeover). Only those that exist now are
            // candidates, so a command started meanwhile never is; and one
            // the manager knows by then (the same pid reused for it) is
            // spared too.
            let pids: Vec<u32> = crate::sys::all_pids().collect();
            let (contain, known) = (inner.contain.clone(), Arc::downgrade(&m.inner));
            tokio::task::spawn_blocking(move || {
                let kept = |id: &str| {
                    kept.contains(id) || known.upgrade().is_some_and(|i| i.commands.contains_key(id))
                };
                contain.sweep_crashed_processes(pids, kept, &shell_pids)
            });
        }
        // The rings are slices of the handover's mapping: copy each into a
        // buffer of its own, one command at a time, so that the mapping is
        // released and each ring's memory leaves with its command.
        if !resumed.is_empty() {
            let task = tokio::spawn(async move {
                for h in resumed {
                    h.reown_rings();
                    tokio::task::yield_now().await;
                }
                tracing::debug!("handed-over rings copied: the handover mapping is released");
            });
            *inner.reowning.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        }
        m
    }
}
