//! A throwaway `redis-server` and a minimal RESP client for the native script tests.
//!
//! A missing `redis-server` fails the tests with a clear message instead of skipping them: CI
//! installs it, and a silent pass would hide the gap.

use llm_key_router_core::store::upstash::Script;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// --------------------------------------------------------------------------- redis-server

/// A throwaway `redis-server`, killed when dropped.
pub struct Server {
    child: Child,
    port: u16,
}

impl Server {
    pub fn start() -> Server {
        // Another process may take the port between probing and binding: try a few ports.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free local port").port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start `redis-server` ({e}). These tests run the Lua scripts on a real Redis: \
                         install it (e.g. `apt-get install redis-server`) so that `redis-server` is on PATH."
                    )
                });
            let mut server = Server { child, port };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server did not come up on a free port after 5 attempts");
    }

    /// True once PING answers; false if the server exited (port taken) or never answered.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut c) = Redis::connect(self.port) {
                if let Ok(Resp::Simple(s)) = c.try_cmd(&["PING"]) {
                    if s == "PONG" {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    pub fn client(&self) -> Redis {
        Redis::connect(self.port).expect("connect to the test redis-server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --------------------------------------------------------------------------- RESP client

/// The RESP replies EVAL and the set-up commands give (no command here answers an array).
#[derive(Debug)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
}

pub struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Redis {
    fn connect(port: u16) -> std::io::Result<Redis> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Redis { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    fn try_cmd(&mut self, args: &[&str]) -> std::io::Result<Resp> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.read()
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with("\r\n") {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read(&mut self) -> std::io::Result<Resp> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        let n = || rest.parse::<i64>().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        Ok(match kind {
            "+" => Resp::Simple(rest.to_string()),
            "-" => Resp::Error(rest.to_string()),
            ":" => Resp::Int(n()?),
            "$" if n()? < 0 => Resp::Bulk(None),
            "$" => {
                let mut buf = vec![0; n()? as usize + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Resp::Bulk(Some(String::from_utf8(buf).expect("UTF-8 bulk string")))
            }
            _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"))),
        })
    }

    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        match self.try_cmd(args).expect("redis round trip") {
            Resp::Error(e) => panic!("redis error for {:?}: {e}", args.first()),
            r => r,
        }
    }

    /// EVAL of the script text the worker sends (EVALSHA falls back to exactly this), returning
    /// the reply as Upstash's `result` would carry it and its raw text.
    pub fn eval(&mut self, script: &Script, call: &(Vec<String>, Vec<String>)) -> (Value, String) {
        let (k, a) = call;
        let n = k.len().to_string();
        let mut args = vec!["EVAL", script.source, n.as_str()];
        args.extend(k.iter().map(String::as_str));
        args.extend(a.iter().map(String::as_str));
        match self.cmd(&args) {
            Resp::Bulk(Some(s)) => (Value::String(s.clone()), s),
            Resp::Int(n) => panic!("{} returned the integer {n}, expected a JSON string", script.name),
            other => panic!("{} returned {other:?}, expected a JSON string", script.name),
        }
    }

    pub fn get(&mut self, key: &str) -> Option<String> {
        match self.cmd(&["GET", key]) {
            Resp::Bulk(b) => b,
            other => panic!("GET returned {other:?}"),
        }
    }
}
