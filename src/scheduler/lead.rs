//! Who runs the schedule (SPEC §13): on sled the one daemon always does; on PostgreSQL only
//! the node holding the leader lock does, and it stops the moment it loses its database
//! session. The others are standby: they serve the API, the control socket and on-demand
//! syncs, and try to become leader every lease/3.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runner::Scheduler;
use crate::store::Store;

/// This node's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the daily schedule, polling, catch-up, keep-alive and the alert checks.
    Leader,
    /// Serves everything else; takes over when the leader goes.
    Standby,
}

impl Role {
    /// `"leader"` or `"standby"` (status, `/health`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// The role as it is now, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct RoleCell(AtomicBool);

impl RoleCell {
    /// Standby until [`run`] says otherwise.
    pub fn new() -> RoleCell {
        RoleCell::default()
    }

    /// The role now.
    pub fn get(&self) -> Role {
        if self.0.load(Ordering::Acquire) {
            Role::Leader
        } else {
            Role::Standby
        }
    }

    fn set(&self, role: Role) {
        self.0.store(role == Role::Leader, Ordering::Release);
    }
}

/// Runs `scheduler` for as long as this node leads, until `token` is cancelled.
pub async fn run(
    scheduler: Arc<Scheduler>,
    store: Arc<Store>,
    lease: Duration,
    role: Arc<RoleCell>,
    token: CancellationToken,
) {
    let Some(leadership) = store.leadership(lease) else {
        // One node, its own leader.
        role.set(Role::Leader);
        scheduler.run(token).await;
        return;
    };
    loop {
        let mut leader = tokio::select! {
            _ = token.cancelled() => return,
            l = leadership.acquire() => l,
        };
        role.set(Role::Leader);
        tracing::info!(
            session = leader.backend_pid(),
            "leader: this node runs the schedule"
        );
        let work = token.child_token();
        let task = tokio::spawn(scheduler.clone().run(work.clone()));
        let shutdown = tokio::select! {
            _ = token.cancelled() => true,
            _ = leader.lost() => false,
        };
        // Scheduled work stops at once: every step of the scheduler watches `work`.
        role.set(Role::Standby);
        work.cancel();
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the scheduler task failed");
        }
        leader.release();
        if shutdown {
            return;
        }
        tracing::warn!(
            "standby: the leader session was lost; scheduled work stopped, trying to lead again"
        );
    }
}
