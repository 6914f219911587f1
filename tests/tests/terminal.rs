//! PTY commands end to end over the wire: real daemon, real terminals, raw
//! WebSocket viewers that keep their own terminal emulator (vt100), so that
//! what a viewer would show can be compared.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use tether_proto::{
    ClientMsg, CommandId, Encoding, ErrorCode, Payload, PtySpec, ReqId, ServerMsg, StartSpec, TermSize,
};
use tether_testkit::{TempPath, bounded};
use tether_tests::{RawWs, TestServer};

/// A viewer: a raw connection plus the terminal it would show.
struct Viewer {
    ws: RawWs,
    term: vt100::Parser,
    /// The stdout offset after the last byte shown.
    next: u64,
    sizes: Vec<TermSize>,
    exited: bool,
}

impl Viewer {
    async fn new(s: &TestServer, rows: u16, cols: u16) -> Viewer {
        let ws = RawWs::connect(s, Encoding::MsgPack).await;
        Viewer { ws, term: vt100::Parser::new(rows, cols, 0), next: 0, sizes: Vec::new(), exited: false }
    }

    /// Handles one frame; returns it.
    async fn step(&mut self) -> ServerMsg {
        let msg = self.ws.recv().await.expect("connection open");
        match &msg {
            ServerMsg::Output { offset, data, .. } => {
                assert_eq!(*offset, self.next, "output continues exactly where the viewer is");
                self.term.process(&data.0);
                self.next += data.0.len() as u64;
            }
            ServerMsg::Screen { offset, size, data, .. } => {
                self.term = vt100::Parser::new(size.rows, size.cols, 0);
                self.term.process(&data.0);
                self.next = *offset;
            }
            ServerMsg::Resized { size, .. } => self.sizes.push(*size),
            // Fell behind the ring: bytes are lost, the screen may be torn.
            ServerMsg::Gap { first_held, .. } => self.next = *first_held,
            ServerMsg::Exit { .. } => self.exited = true,
            ServerMsg::Error { message, .. } => panic!("error: {message}"),
            _ => {}
        }
        msg
    }

    /// Steps until the screen contains `text`.
    async fn until_screen(&mut self, text: &str) {
        bounded(async {
            while !self.term.screen().contents().contains(text) {
                self.step().await;
            }
        })
        .await;
    }

    async fn send(&mut self, msg: ClientMsg) {
        self.ws.send(&msg).await;
    }

    async fn type_text(&mut self, id: u64, command: &CommandId, text: &[u8]) {
        self.send(ClientMsg::Stdin {
            id: ReqId(id),
            command: command.clone(),
            data: Payload::from(text),
            writer: None,
            offset: None,
        })
        .await;
    }
}

fn pty_spec(argv: &[&str], rows: u16, cols: u16) -> StartSpec {
    StartSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        pty: Some(PtySpec { rows, cols, term: None }),
        ..StartSpec::default()
    }
}

async fn start(v: &mut Viewer, spec: StartSpec) -> CommandId {
    v.send(ClientMsg::Start { id: ReqId(1), spec }).await;
    loop {
        if let ServerMsg::Started { command, .. } = v.step().await {
            return command;
        }
    }
}

fn attach(command: &CommandId, offset: u64, size: Option<TermSize>) -> ClientMsg {
    ClientMsg::Attach {
        id: ReqId(2),
        command: command.clone(),
        stdout_offset: offset,
        stderr_offset: 0,
        tail_bytes: None,
        pace: false,
        screen: true,
        size,
        window_bytes: None,
        client: None,
    }
}

/// A file of numbered lines for `less`.
fn numbered_file(lines: usize) -> TempPath {
    let f = TempPath::new();
    let text: String = (1..=lines).map(|i| format!("line {i:03} of the file\n")).collect();
    std::fs::write(&f.0, text).unwrap();
    f
}

#[tokio::test]
async fn a_full_screen_program_is_restored_exactly_for_a_second_viewer() {
    let s = TestServer::start().await;
    let file = numbered_file(200);
    let mut a = Viewer::new(&s, 24, 80).await;
    let id = start(&mut a, pty_spec(&["less", file.as_str()], 24, 80)).await;
    a.until_screen("line 023").await;
    // Scroll a page and a line, so the screen is not the first one written.
    a.type_text(3, &id, b" j").await;
    a.until_screen("line 047").await;

    // The first viewer goes away (network loss); a second one attaches.
    let seen = a.next;
    drop(a.ws);
    let mut b = Viewer::new(&s, 24, 80).await;
    b.send(attach(&id, 0, Some(TermSize { rows: 24, cols: 80 }))).await;
    let (offset, screen) = bounded(async {
        loop {
            if let ServerMsg::Screen { offset, data, .. } = b.step().await {
                return (offset, data);
            }
        }
    })
    .await;
    assert!(!screen.0.is_empty());
    // less is idle, so the screen is of the offset the first viewer had
    // reached, and shows what the first viewer showed.
    assert_eq!(offset, seen);
    assert!(b.term.screen().alternate_screen(), "less runs in the alternate screen");
    assert_eq!(b.term.screen().contents(), a.term.screen().contents());
    assert!(b.term.screen().contents().contains("line 047"));
    assert_eq!(b.term.screen().cursor_position(), a.term.screen().cursor_position());
    // And it stays live: the second viewer drives it.
    b.type_text(4, &id, b"j").await;
    b.until_screen("line 048").await;
    b.type_text(5, &id, b"q").await;
    bounded(async {
        while !b.exited {
            b.step().await;
        }
    })
    .await;
}

/// A viewer that attaches while a full-screen program runs gets the
/// shell's screen underneath it too: when the program quits, it sees what
/// a viewer who never left sees.
#[tokio::test]
async fn the_normal_screen_under_a_full_screen_program_is_restored() {
    let s = TestServer::start().await;
    let file = numbered_file(200);
    let mut a = Viewer::new(&s, 24, 80).await;
    let spec = StartSpec {
        env: [("PS1".to_owned(), "PROMPT$ ".to_owned())].into(),
        ..pty_spec(&["bash", "--norc", "--noprofile"], 24, 80)
    };
    let id = start(&mut a, spec).await;
    a.until_screen("PROMPT$").await;
    a.type_text(3, &id, b"echo before-$((1+1))\r").await;
    a.until_screen("before-2").await;
    a.type_text(4, &id, format!("less {}\r", file.as_str()).as_bytes()).await;
    a.until_screen("line 023").await;

    let mut b = Viewer::new(&s, 24, 80).await;
    b.send(attach(&id, 0, Some(TermSize { rows: 24, cols: 80 }))).await;
    b.until_screen("line 023").await;
    assert!(b.term.screen().alternate_screen());
    b.type_text(5, &id, b"q").await;
    // Both see the shell again, with what was there before less.
    bounded(async {
        while !a.term.screen().contents().contains("before-2") || a.term.screen().alternate_screen() {
            a.step().await;
        }
        while b.term.screen().alternate_screen() || b.next < a.next {
            b.step().await;
        }
        // Either may have read further (the prompt after `less`): both
        // catch up with whichever is ahead. The shell then waits for input.
        while a.next != b.next {
            if a.next < b.next {
                a.step().await;
            } else {
                b.step().await;
            }
        }
    })
    .await;
    assert_eq!(b.next, a.next);
    assert_eq!(b.term.screen().contents(), a.term.screen().contents());
    assert!(b.term.screen().contents().contains("before-2"), "{}", b.term.screen().contents());
    assert_eq!(b.term.screen().cursor_position(), a.term.screen().cursor_position());
    a.type_text(6, &id, b"exit\r").await;
}

#[tokio::test]
async fn a_reconnecting_viewer_resumes_from_its_offset_without_a_screen() {
    let s = TestServer::start().await;
    let mut a = Viewer::new(&s, 40, 80).await;
    let spec = StartSpec {
        shell: Some("for i in $(seq 1 30); do echo n$i; sleep 0.02; done; read x".into()),
        pty: Some(PtySpec { rows: 40, cols: 80, term: None }),
        ..StartSpec::default()
    };
    let id = start(&mut a, spec).await;
    a.until_screen("n10").await;
    // The connection drops; the same terminal (intact) reconnects.
    let mut b = Viewer::new(&s, 40, 80).await;
    b.next = a.next;
    b.term = a.term;
    drop(a.ws);
    b.send(attach(&id, b.next, None)).await;
    // No screen: output continues at `seen` (Viewer::step asserts it).
    bounded(async {
        loop {
            match b.step().await {
                ServerMsg::Screen { .. } => panic!("a resuming viewer gets no screen"),
                ServerMsg::Output { .. } => break,
                _ => {}
            }
        }
    })
    .await;
    b.until_screen("n30").await;
    let shown = b.term.screen().contents();
    for i in 1..=30 {
        let n = shown.lines().filter(|l| l.trim() == format!("n{i}")).count();
        assert_eq!(n, 1, "n{i} shown once: {shown:?}");
    }
}

#[tokio::test]
async fn resize_is_applied_and_announced_to_every_viewer() {
    let s = TestServer::start().await;
    let mut a = Viewer::new(&s, 24, 80).await;
    let mut spec = pty_spec(&["bash", "--norc", "--noprofile"], 24, 80);
    spec.env.insert("PS1".into(), "PROMPT$ ".into());
    let id = start(&mut a, spec).await;
    // Resizes wait for a prompt: readline reads the window size and writes
    // it back as it starts each line, undoing a resize that lands between.
    a.until_screen("PROMPT$").await;
    let mut b = Viewer::new(&s, 24, 80).await;
    b.send(attach(&id, 0, None)).await;
    a.send(ClientMsg::Resize { id: ReqId(7), command: id.clone(), size: TermSize { rows: 40, cols: 120 } })
        .await;
    a.type_text(8, &id, b"stty size\n").await;
    a.until_screen("40 120\nPROMPT$").await;
    bounded(async {
        while !b.sizes.contains(&TermSize { rows: 40, cols: 120 }) {
            b.step().await;
        }
    })
    .await;
    assert!(a.sizes.contains(&TermSize { rows: 40, cols: 120 }));
    // A viewer attaching with its own size makes it the size (newest wins).
    let mut c = Viewer::new(&s, 24, 80).await;
    c.send(attach(&id, 0, Some(TermSize { rows: 30, cols: 90 }))).await;
    c.type_text(9, &id, b"clear; stty size\n").await;
    c.until_screen("30 90").await;
    // Bad sizes and resizing a pipe command are typed errors.
    let mut r = RawWs::connect(&s, Encoding::MsgPack).await;
    r.send(&ClientMsg::Resize { id: ReqId(1), command: id.clone(), size: TermSize { rows: 0, cols: 5 } })
        .await;
    assert!(matches!(
        bounded(r.recv()).await,
        Some(ServerMsg::Error { code: ErrorCode::BadRequest, id: Some(ReqId(1)), .. })
    ));
    let pipe = StartSpec { argv: vec!["sleep".into(), "5".into()], attach: false, ..StartSpec::default() };
    r.send(&ClientMsg::Start { id: ReqId(2), spec: pipe }).await;
    let Some(ServerMsg::Started { command: pipe_id, .. }) = r.recv().await else { panic!() };
    r.send(&ClientMsg::Resize { id: ReqId(3), command: pipe_id, size: TermSize { rows: 5, cols: 5 } }).await;
    assert!(matches!(r.recv().await, Some(ServerMsg::Error { code: ErrorCode::BadRequest, .. })));
}

#[tokio::test]
async fn interrupt_gets_through_an_output_flood() {
    let s = TestServer::start().await;
    let mut a = Viewer::new(&s, 24, 80).await;
    let id = start(&mut a, pty_spec(&["bash", "--norc", "--noprofile"], 24, 80)).await;
    a.type_text(2, &id, b"yes flood | head -c 2000000000\n").await;
    a.until_screen("flood\nflood").await;
    // Ctrl-C typed while the flood runs (2 GB would take far longer than
    // the bound), then a command that reports how the flood ended.
    let started = tokio::time::Instant::now();
    a.type_text(3, &id, b"\x03").await;
    a.type_text(4, &id, b"echo done-$?\n").await;
    a.until_screen("done-130").await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_rust_client_resumes_a_terminal_through_cuts_without_loss_or_duplicates() {
    use tether_client::ExecEvent;
    let s = TestServer::start().await;
    // Budgets above the largest frame (a terminal read is at most 64 KiB).
    let proxy = tether_testkit::CutProxy::start(s.addr, 100_000, 300_000).await;
    let client = s.client_via(&proxy.url()).await;
    let spec = StartSpec {
        shell: Some("seq -f line-%g 1 60000; sleep 0.2".into()),
        pty: Some(PtySpec { rows: 24, cols: 80, term: None }),
        ..StartSpec::default()
    };
    let mut ex = client.start(spec).await.unwrap();
    let mut out = Vec::new();
    let mut screens = 0;
    let status = bounded(async {
        loop {
            match ex.next().await.unwrap().unwrap() {
                ExecEvent::Stdout(b) => out.extend_from_slice(&b),
                ExecEvent::Screen { .. } => screens += 1,
                ExecEvent::Gap { .. } => panic!("gap"),
                ExecEvent::Exit(st) => return st,
                _ => {}
            }
        }
    })
    .await;
    assert!(proxy.cuts() > 0, "the proxy cut the connection");
    assert_eq!(screens, 0, "every resume found its offset held: no screen");
    assert_eq!(out.len() as u64, status.stdout_bytes);
    let text = String::from_utf8(out).unwrap();
    let want: String = (1..=60000).map(|i| format!("line-{i}\r\n")).collect();
    assert_eq!(text, want);
}

#[tokio::test]
async fn a_terminal_attachment_starts_with_size_and_screen_and_redraws_on_request() {
    use tether_client::{Client, ExecEvent};
    let s = TestServer::start().await;
    let client = Client::connect(&format!("http://{}", s.addr), &s.token).await.unwrap();
    let spec = StartSpec {
        shell: Some("printf 'ready\\n'; sleep 30".into()),
        pty: Some(PtySpec { rows: 24, cols: 80, term: None }),
        attach: false,
        ..StartSpec::default()
    };
    let (id, _) = client.start_detached(spec).await.unwrap();
    let size = TermSize { rows: 50, cols: 200 };
    let mut ex = client.attach_terminal(&id, size).await.unwrap();
    let mut first = Vec::new();
    bounded(async {
        while first.len() < 2 {
            first.push(ex.next().await.unwrap().unwrap());
        }
    })
    .await;
    assert!(first.contains(&ExecEvent::Resized(size)), "{first:?}");
    assert!(first.iter().any(|e| matches!(e, ExecEvent::Screen { size: s, .. } if *s == size)), "{first:?}");
    // Wait until the program's output is there (it may start after the
    // attach), so the redrawn screen must show it.
    let mut seen = Vec::new();
    for e in &first {
        if let ExecEvent::Screen { data, .. } = e {
            seen.extend_from_slice(data);
        }
    }
    bounded(async {
        while !String::from_utf8_lossy(&seen).contains("ready") {
            if let ExecEvent::Stdout(b) = ex.next().await.unwrap().unwrap() {
                seen.extend_from_slice(&b);
            }
        }
    })
    .await;
    let small = TermSize { rows: 10, cols: 40 };
    ex.redraw(small).await.unwrap();
    let screen = bounded(async {
        loop {
            if let ExecEvent::Screen { size, data } = ex.next().await.unwrap().unwrap() {
                return (size, data);
            }
        }
    })
    .await;
    assert_eq!(screen.0, small);
    let mut term = vt100::Parser::new(small.rows, small.cols, 0);
    term.process(&screen.1);
    assert!(term.screen().contents().contains("ready"));
    ex.kill().await.unwrap();
}

/// A plain HTTP GET; returns the whole response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    bounded(tcp.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_terminal_page_is_public_static_and_confined() {
    let s = TestServer::start().await;
    let page = http_get(s.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{page}");
    assert!(lower.contains("cross-origin-opener-policy: same-origin"));
    assert!(lower.contains("x-frame-options: deny"));
    assert!(lower.contains("referrer-policy: no-referrer"));
    assert!(page.contains("<title>tether</title>"));
    assert!(http_get(s.addr, "/app.js").await.starts_with("HTTP/1.1 200"));
    assert!(http_get(s.addr, "/app.css").await.starts_with("HTTP/1.1 200"));
    // Everything else still needs the token.
    assert!(http_get(s.addr, "/v1/commands").await.starts_with("HTTP/1.1 401"));
    assert!(http_get(s.addr, "/app.js.map").await.starts_with("HTTP/1.1 401"));
}

#[tokio::test]
async fn a_finished_terminal_command_can_still_be_viewed() {
    let s = TestServer::start().await;
    let mut a = Viewer::new(&s, 24, 80).await;
    let id = start(&mut a, pty_spec(&["sh", "-c", "printf 'last words'"], 24, 80)).await;
    bounded(async {
        while !a.exited {
            a.step().await;
        }
    })
    .await;
    // With the screen: the final screen, then the exit.
    let mut b = Viewer::new(&s, 24, 80).await;
    b.send(attach(&id, 0, Some(TermSize { rows: 10, cols: 40 }))).await;
    b.until_screen("last words").await;
    assert_eq!(b.term.screen().size(), (10, 40));
    bounded(async {
        while !b.exited {
            b.step().await;
        }
    })
    .await;
    // Raw, with a size (which a finished command ignores): the bytes.
    let mut c = Viewer::new(&s, 24, 80).await;
    let mut raw = attach(&id, 0, Some(TermSize { rows: 10, cols: 40 }));
    if let ClientMsg::Attach { screen, .. } = &mut raw {
        *screen = false;
    }
    c.send(raw).await;
    c.until_screen("last words").await;
    bounded(async {
        while !c.exited {
            c.step().await;
        }
    })
    .await;
}
