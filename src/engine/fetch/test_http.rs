//! A tiny HTTP/1.1 fixture server on 127.0.0.1 for fetcher tests: plain files, redirects,
//! error statuses, a route that fails N times before it works, and one that drops the
//! connection in the middle of the body. Every response closes its connection. Shared by the
//! library's unit tests and the integration tests (`tests/it/support`), which include this
//! file by path.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Route {
    Dir(std::path::PathBuf),
    File(Vec<u8>),
    Redirect(String),
    /// Answer `status` `fails` times, then serve the body.
    Flaky {
        fails: usize,
        status: u16,
        body: Vec<u8>,
    },
    /// Promise the whole body (Content-Length) but close after half of it, `times` times.
    Truncated {
        times: usize,
        body: Vec<u8>,
    },
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, Route>,
    hits: HashMap<String, usize>,
}

/// The server; it runs until the test process exits.
#[derive(Debug, Clone)]
pub struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &state);
                });
            }
        });
        Server { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn route(&self, path: &str, route: Route) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), route);
    }

    pub fn file(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.route(path, Route::File(body.into()));
    }

    /// Serve the files below `dir` under the prefix `path` (a dumb git remote, say).
    pub fn dir(&self, path: &str, dir: &std::path::Path) {
        self.route(path, Route::Dir(dir.to_owned()));
    }

    pub fn redirect(&self, path: &str, to: &str) {
        self.route(path, Route::Redirect(to.to_owned()));
    }

    pub fn flaky(&self, path: &str, fails: usize, status: u16, body: impl Into<Vec<u8>>) {
        self.route(
            path,
            Route::Flaky {
                fails,
                status,
                body: body.into(),
            },
        );
    }

    pub fn truncated(&self, path: &str, times: usize, body: impl Into<Vec<u8>>) {
        self.route(
            path,
            Route::Truncated {
                times,
                body: body.into(),
            },
        );
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_owned();
    let route = {
        let mut st = state.lock().unwrap();
        *st.hits.entry(path.clone()).or_default() += 1;
        let route = st.routes.get(&path).cloned().or_else(|| {
            // The longest directory prefix.
            st.routes
                .iter()
                .filter(|(p, r)| matches!(r, Route::Dir(_)) && path.starts_with(&format!("{p}/")))
                .max_by_key(|(p, _)| p.len())
                .map(|(p, r)| match r {
                    Route::Dir(d) => Route::Dir(d.join(&path[p.len() + 1..])),
                    _ => unreachable!(),
                })
        });
        // Count down the failing routes.
        match st.routes.get_mut(&path) {
            Some(Route::Flaky { fails, .. }) if *fails > 0 => *fails -= 1,
            Some(Route::Truncated { times, .. }) if *times > 0 => *times -= 1,
            _ => {}
        }
        route
    };
    let mut out = conn;
    let status_line = |code: u16| {
        let reason = match code {
            200 => "OK",
            302 => "Found",
            404 => "Not Found",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Status",
        };
        format!("HTTP/1.1 {code} {reason}\r\nConnection: close\r\n")
    };
    let full = |out: &mut TcpStream, code: u16, body: &[u8]| -> std::io::Result<()> {
        out.write_all(status_line(code).as_bytes())?;
        out.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())?;
        out.write_all(body)?;
        out.flush()
    };
    match route {
        None => full(&mut out, 404, b"not found\n"),
        Some(Route::Dir(file)) => {
            if file
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return full(&mut out, 404, b"not found\n");
            }
            match std::fs::read(&file) {
                Ok(body) => full(&mut out, 200, &body),
                Err(_) => full(&mut out, 404, b"not found\n"),
            }
        }
        Some(Route::File(body)) => full(&mut out, 200, &body),
        Some(Route::Redirect(to)) => {
            out.write_all(status_line(302).as_bytes())?;
            out.write_all(format!("Location: {to}\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
            out.flush()
        }
        Some(Route::Flaky {
            fails,
            status,
            body,
        }) => {
            if fails > 0 {
                full(&mut out, status, b"try again\n")
            } else {
                full(&mut out, 200, &body)
            }
        }
        Some(Route::Truncated { times, body }) => {
            if times > 0 {
                out.write_all(status_line(200).as_bytes())?;
                out.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())?;
                out.write_all(&body[..body.len() / 2])?;
                out.flush()?;
                // Drop the connection mid-body.
                out.shutdown(std::net::Shutdown::Both)
            } else {
                full(&mut out, 200, &body)
            }
        }
    }
}
