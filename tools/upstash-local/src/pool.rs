//! A small pool of exclusive Redis connections.
//!
//! # Design
//!
//! Every HTTP request checks out one connection for the whole request, sends all of its
//! commands as one pipelined write (`/pipeline` and `/multi-exec` included) and reads all
//! replies, then returns the connection. Holding a connection exclusively is what makes
//! `/multi-exec` correct: MULTI, the queued commands and EXEC must not interleave with
//! other requests' commands on the same socket. Plain commands use the same path, so there
//! is a single code path and no per-request round trip other than the command itself.
//!
//! * Size: at most `max_size` connections (default 64) exist at once; a request that finds
//!   none free waits on a semaphore for up to `wait_timeout`. Redis executes commands one
//!   at a time anyway, so 64 sockets easily keep it saturated with 200+ requests in flight.
//! * No health check on checkout (unlike deadpool-redis, which sends UNWATCH + PING on
//!   every recycle, doubling the Redis round trips). Instead, any transport error, response
//!   timeout or protocol error marks the connection broken: it is dropped and the pool's
//!   *generation* is bumped, which discards every idle connection too (after a Redis
//!   restart they are all dead). New connections are then opened on demand, so the pool
//!   recovers by itself once Redis is back.
//! * Connecting is bounded by `connect_timeout` (default 1.5 s) and each reply by the
//!   connection's response timeout, so a dead or hung Redis yields a quick 503, never a hang.
//!
//! The underlying connection type is the `redis` crate's `MultiplexedConnection`, used
//! exclusively here (one request at a time), which gives us its pipelining and RESP codec.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Pipeline, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub max_size: usize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub wait_timeout: Duration,
}

pub struct Pool {
    client: Client,
    conn_config: AsyncConnectionConfig,
    cfg: PoolConfig,
    idle: Mutex<Vec<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    permits: Arc<Semaphore>,
}

/// A checked-out connection. Returned to the pool on drop unless marked broken.
pub struct PooledConn {
    pool: Arc<Pool>,
    conn: Option<MultiplexedConnection>,
    generation: u64,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(redis_url: &str, cfg: PoolConfig) -> redis::RedisResult<Arc<Self>> {
        let client = Client::open(redis_url)?;
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout));
        Ok(Arc::new(Self {
            client,
            conn_config,
            permits: Arc::new(Semaphore::new(cfg.max_size)),
            cfg,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
        }))
    }

    /// Checks out a connection, opening a new one if none is idle.
    pub async fn get(self: &Arc<Self>) -> Result<PooledConn, String> {
        let permit = tokio::time::timeout(self.cfg.wait_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| "timed out waiting for a free connection".to_string())?
            .map_err(|e| e.to_string())?;
        let generation = self.generation.load(Ordering::Acquire);
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|(g, _)| *g == generation);
            idle.pop()
        };
        let conn = match reused {
            Some((_, c)) => c,
            None => {
                // The redis crate applies `connect_timeout` itself; the outer timeout also
                // bounds the handshake (CLIENT SETINFO) in case Redis accepts but never answers.
                let fut = self.client.get_multiplexed_async_connection_with_config(&self.conn_config);
                match tokio::time::timeout(self.cfg.connect_timeout * 2, fut).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("timed out connecting to redis".into()),
                }
            }
        };
        Ok(PooledConn { pool: Arc::clone(self), conn: Some(conn), generation, _permit: permit })
    }

    /// Number of idle connections (for tests and stats).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

impl PooledConn {
    /// Sends all commands of `pipe` in one write and returns one reply per command. Server
    /// errors come back as `Value::ServerError` items; `Err` means the connection failed
    /// (it is then marked broken and will not be reused).
    pub async fn run(&mut self, pipe: &Pipeline, count: usize) -> Result<Vec<Value>, String> {
        let Some(conn) = self.conn.as_mut() else {
            return Err("connection is broken".into());
        };
        match conn.req_packed_commands(pipe, 0, count).await {
            Ok(values) if values.len() == count => Ok(values),
            Ok(values) => {
                self.mark_broken();
                Err(format!("expected {count} replies, got {}", values.len()))
            }
            Err(e) => {
                self.mark_broken();
                Err(e.to_string())
            }
        }
    }

    /// Drops this connection and invalidates every idle one.
    pub fn mark_broken(&mut self) {
        self.conn = None;
        let pool = &self.pool;
        if pool
            .generation
            .compare_exchange(self.generation, self.generation + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            pool.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.pool.generation.load(Ordering::Acquire) == self.generation {
                self.pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push((self.generation, conn));
            }
        }
    }
}
