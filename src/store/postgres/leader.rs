//! Leadership among the daemons sharing one database (SPEC §13).
//!
//! The leader holds `pg_try_advisory_lock(LEADER_LOCK)` on a session of its own, outside the
//! pool, which the server releases the moment that session dies (process killed, network
//! gone, `pg_terminate_backend`). The holder cannot learn of a lost session from the lock
//! itself, so a [`Leader`] runs a heartbeat (`SELECT 1` every lease/3, each with lease/3 to
//! answer) and watches the session's connection task: the first error, timeout or end marks
//! it lost, and [`Leader::lost`] fires. Whoever holds a `Leader` must stop scheduled work
//! then, before trying to become leader again: by then another node may hold the lock.
//!
//! A standby calls [`Leadership::try_acquire`] every lease/3; since the server frees the lock
//! as soon as the old session ends, it takes over within the lease.

use std::time::Duration;

use tokio::sync::watch;

use super::{Connector, PgStore, Result};

/// The advisory lock key of the leader ("boa-lead" in ASCII). Advisory locks are per
/// database, so nodes of one database contend and others never see it.
const LEADER_LOCK: i64 = 0x626f_612d_6c65_6164;

/// How to contend for leadership of one database.
#[derive(Clone)]
pub struct Leadership {
    connector: Connector,
    lease: Duration,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leadership(lease {:?})", self.lease)
    }
}

/// Leadership held: the session that holds the lock, watched.
#[derive(Debug)]
pub struct Leader {
    lost: watch::Receiver<bool>,
    pid: i32,
    /// The heartbeat; it owns the session's client, so aborting it ends the session (and
    /// with it the lock).
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Contention for `store`'s database with `lease` (`leader_lease_secs`): the longest a
    /// dead leader's session goes unnoticed by its own node, and the bound on a takeover when
    /// standbys try every lease/3.
    pub fn new(store: &PgStore, lease: Duration) -> Leadership {
        Leadership {
            connector: store.connector().clone(),
            lease: lease.max(Duration::from_millis(300)),
        }
    }

    /// How often to heartbeat, or to retry as a standby.
    pub fn interval(&self) -> Duration {
        self.lease / 3
    }

    /// Opens a session and tries the lock once: `Some(Leader)` when this node is now the
    /// leader, `None` when another session holds it (the session is closed again).
    ///
    /// # Errors
    /// [`super::Error::Unavailable`] and the like: the database cannot be reached.
    pub async fn try_acquire(&self) -> Result<Option<Leader>> {
        let (client, conn_task) = self.connector.connect().await?;
        // The server frees the lock only once it sees this session die: a killed process at
        // once, a dead host or a cut network after the server's TCP keepalive (2 h by
        // default). Asked to probe within the lease, the server notices in about one lease.
        if let Err(e) = client.batch_execute(&server_keepalives(self.lease)).await {
            conn_task.abort();
            return Err(e.into());
        }
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1), pg_backend_pid()",
                &[&LEADER_LOCK],
            )
            .await?;
        let got: bool = row.try_get(0)?;
        if !got {
            conn_task.abort();
            return Ok(None);
        }
        let pid: i32 = row.try_get(1)?;
        let (tx, lost) = watch::channel(false);
        let every = self.interval();
        let heartbeat = tokio::spawn(async move {
            let mut conn_task = conn_task;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut conn_task => {
                        tracing::warn!("leader session ended: no longer leader");
                        break;
                    }
                    _ = tick.tick() => {
                        match tokio::time::timeout(every, client.simple_query("SELECT 1")).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "leader heartbeat failed: no longer leader");
                                break;
                            }
                            Err(_) => {
                                tracing::warn!("leader heartbeat timed out: no longer leader");
                                break;
                            }
                        }
                    }
                }
            }
            let _ = tx.send(true);
            // Make sure the session is gone (and the lock with it) before reporting.
            drop(client);
            conn_task.abort();
        });
        Ok(Some(Leader {
            lost,
            pid,
            heartbeat,
        }))
    }

    /// Waits until this node is the leader, trying every lease/3 (errors are logged and
    /// retried: a database that is away only delays the takeover).
    pub async fn acquire(&self) -> Leader {
        loop {
            match self.try_acquire().await {
                Ok(Some(l)) => return l,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "leadership: cannot reach the database"),
            }
            tokio::time::sleep(self.interval()).await;
        }
    }
}

impl Leader {
    /// Resolves as soon as leadership is lost (at once if it already was). Stop scheduled
    /// work when it does.
    pub async fn lost(&mut self) {
        // An error means the heartbeat is gone, which only happens once it reported.
        let _ = self.lost.wait_for(|l| *l).await;
    }

    /// True once leadership is lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// A receiver that turns true when leadership is lost (for tasks that each watch).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// The server process id of the session holding the lock (for `pg_terminate_backend`
    /// in tests, and for operators).
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    /// Gives leadership up: the session ends, and the server frees the lock.
    pub fn release(self) {
        self.heartbeat.abort();
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The server-side TCP settings of a lock-holding session: a peer that went silent is
/// dropped (and its locks freed) within about `lease`.
fn server_keepalives(lease: Duration) -> String {
    let idle = (lease.as_secs() / 3).max(1);
    format!(
        "SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = 1; \
         SET tcp_keepalives_count = 3; SET tcp_user_timeout = {}",
        lease.as_millis().max(1000)
    )
}

/// The first key of the two-key advisory locks taken by [`PgStore::exclusive`] ("boa-" in
/// ASCII); a two-key lock never collides with the leader's one-key lock.
const EXCLUSIVE_CLASS: i32 = 0x626f_612d;

/// A cluster-wide exclusive hold on a name (one sync-all per date and scope): an advisory
/// lock on a session of its own, released when this is dropped (the session ends) or when
/// the process dies (the server ends the session).
#[derive(Debug)]
pub struct Exclusive {
    _client: tokio_postgres::Client,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl PgStore {
    /// Holds `name` across the cluster until the answer is dropped. With `wait`, waits until
    /// no other session of any node holds it; without, answers `None` at once when one does.
    ///
    /// # Errors
    /// [`super::Error::Unavailable`]: the database cannot be reached.
    pub async fn exclusive(&self, name: &str, wait: bool) -> Result<Option<Exclusive>> {
        let (client, conn) = self.connector().connect().await?;
        if let Err(e) = client
            .batch_execute(&server_keepalives(Duration::from_secs(15)))
            .await
        {
            conn.abort();
            return Err(e.into());
        }
        let sql = if wait {
            "SELECT true FROM (SELECT pg_advisory_lock($1::int4, hashtext($2::text))) AS held"
        } else {
            "SELECT pg_try_advisory_lock($1::int4, hashtext($2::text))"
        };
        let held: Result<bool> = async {
            Ok(client
                .query_one(sql, &[&EXCLUSIVE_CLASS, &name])
                .await?
                .try_get(0)?)
        }
        .await;
        match held {
            Ok(true) => Ok(Some(Exclusive {
                _client: client,
                conn,
            })),
            Ok(false) => {
                conn.abort();
                Ok(None)
            }
            Err(e) => {
                conn.abort();
                Err(e)
            }
        }
    }
}
