//! The handover format's golden file: a state encoded by this version of
//! the format, checked in. Decoding it and encoding it again must give the
//! same bytes, so changing any serialised struct without a new `VERSION`
//! (and a new golden file) fails here.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::command::{ExitInfo, ExitReason, Identity, Lifetimes, LiveState};
use crate::spec::{OutputLimit, TermSize};
use crate::stdin::{StdinSeq, Writers};
use crate::sys::{Process, Reaped};

fn golden_path() -> std::path::PathBuf {
    golden_of(VERSION)
}

fn golden_of(version: u32) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("golden/handover-v{version}.msgpack"))
}

/// The encoded state (the memfd's header) of `commands` and `shells`.
fn encode(
    commands: &[Frozen],
    shells: &[FrozenShell],
    fds: Vec<RawFd>,
    named: &BTreeMap<String, RawFd>,
) -> Vec<u8> {
    let (parts, places) = (vec![14, 15], vec![(0, 0), (2, 5), (1, 0), (0, 5)]);
    rmp_serde::to_vec_named(&WireRef { version: VERSION, commands, shells, fds, named, parts, places })
        .expect("encodes")
}

#[tokio::test(start_paused = true)]
async fn the_golden_state_decodes_and_encodes_to_the_same_bytes() {
    let path = golden_path();
    let golden = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. A new VERSION needs a new golden file: \
             `cargo test -p tether-exec write_golden -- --ignored`",
            path.display()
        )
    });
    let wire: Wire = rmp_serde::from_slice(&golden).expect("this version decodes its own golden state");
    assert_eq!(wire.commands.len(), 2);
    assert!(matches!(wire.commands[0].phase, Phase::Live(_)));
    assert!(matches!(wire.commands[1].phase, Phase::Held { .. }));
    assert_eq!(wire.shells.len(), 1);
    assert_eq!((wire.parts.clone(), wire.places.len()), (vec![14, 15], 4));
    let again = encode(&wire.commands, &wire.shells, wire.fds.clone(), &wire.named);
    assert!(
        again == golden,
        "the handover format changed without a new VERSION: bump it in handover.rs and \
         write a new golden file (`cargo test -p tether-exec write_golden -- --ignored`)"
    );
}

#[test]
fn a_state_of_the_version_before_parts_decodes_with_every_ring_byte_after_it() {
    // A daemon of version 2 restarting into this one (an upgrade).
    let golden = std::fs::read(golden_of(2)).expect("the version 2 golden file");
    let wire = Wire::decode(&golden).expect("version 2 is still read");
    assert_eq!((wire.commands.len(), wire.shells.len()), (2, 1));
    assert!(wire.parts.is_empty());
}

#[tokio::test(start_paused = true)]
async fn ring_bytes_written_in_parts_are_read_back_whole_and_in_order() {
    use std::os::fd::IntoRawFd;
    // Four rings of chunks of uneven sizes, each chunk's bytes its own.
    let mut commands = sample();
    let mut k = 0u32;
    for ring in commands.iter_mut().flat_map(|c| &mut c.rings) {
        (ring.chunks, ring.data) = (Vec::new(), Vec::new());
        for i in 0..300u64 {
            k += 1;
            let data: Vec<u8> = (0..(1 + k * 7919 % 9000)).map(|j| (k.wrapping_mul(31) ^ j) as u8).collect();
            ring.chunks.push((i * 10_000, i, data.len() as u64));
            ring.data.push(Bytes::from(data));
        }
    }
    let want = ring_data(&commands);
    for parts in [1, 2, 3] {
        let h = Handover::new(commands.iter().map(copy).collect(), Vec::new(), Vec::new());
        let fds = h.write_state(|_| parts).expect("written");
        assert_eq!(fds.len(), parts);
        // Handed on as across an exec: by number, the parts named in the
        // state.
        let raw: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
        let back = Handover::inherit(raw[0]).expect("read back");
        assert!(ring_data(&back.commands) == want, "{parts} parts: the rings read back differ");
    }
}

#[tokio::test(start_paused = true)]
async fn ring_bytes_written_ahead_and_since_are_read_back_whole_and_in_order() {
    use std::os::fd::IntoRawFd;
    let chunk = |k: u32| {
        Bytes::from((0..(1 + k * 7919 % 9000)).map(|j| (k.wrapping_mul(31) ^ j) as u8).collect::<Vec<u8>>())
    };
    let fill = |ring: &mut FrozenRing, ks: std::ops::Range<u32>| {
        (ring.chunks, ring.data) = (Vec::new(), Vec::new());
        for k in ks {
            let data = chunk(k);
            ring.chunks.push((u64::from(k) * 10_000, u64::from(k), data.len() as u64));
            ring.data.push(data);
        }
    };
    let mut commands = sample();
    for (i, ring) in commands.iter_mut().flat_map(|c| &mut c.rings).enumerate() {
        fill(ring, (i as u32 * 1000)..(i as u32 * 1000 + 400));
    }
    // Written ahead: every chunk as it is now.
    let ahead: Vec<Bytes> = commands.iter().flat_map(|c| &c.rings).flat_map(|r| r.data.clone()).collect();
    let pre = Precopy::write(ahead).expect("written ahead");
    // Meanwhile the rings move on: the oldest half of each evicted, as
    // many new chunks come (not written ahead), one ring is replaced whole.
    for ring in commands.iter_mut().flat_map(|c| &mut c.rings) {
        let first = ring.chunks[0].1 as u32;
        let kept: Vec<(u64, u64, u64)> = ring.chunks.split_off(200);
        let data = ring.data.split_off(200);
        (ring.chunks, ring.data) = (kept, data);
        for k in (first + 400)..(first + 600) {
            let data = chunk(k);
            ring.chunks.push((u64::from(k) * 10_000, u64::from(k), data.len() as u64));
            ring.data.push(data);
        }
    }
    fill(&mut commands[1].rings[1], 9000..9100);
    // The first command's rings took the written copies (as the daemon's
    // do once written ahead): those chunks are placed by address.
    let mut rebased = 0;
    for ring in &mut commands[0].rings {
        for d in &mut ring.data {
            if let Some(copy) = pre.mapped(d) {
                assert_eq!(copy, *d);
                (*d, rebased) = (copy, rebased + 1);
            }
        }
    }
    assert_eq!(rebased, 400);
    let want = ring_data(&commands);
    // What the state itself must still carry: the chunks not written ahead.
    let since: u64 = want.iter().flatten().filter(|c| pre.place(c).is_none()).map(|c| c.len() as u64).sum();
    let total: u64 = want.iter().flatten().map(|c| c.len() as u64).sum();
    assert!(since > 0 && since < total, "{since} of {total}");
    let size = |fd: RawFd| std::fs::metadata(format!("/proc/self/fd/{fd}")).expect("a memfd").len();
    for parts in [1, 2] {
        let mut h = Handover::new(commands.iter().map(copy).collect(), Vec::new(), Vec::new());
        let pre = Precopy {
            files: pre.files.iter().map(|f| f.try_clone().expect("a duplicate")).collect(),
            maps: pre.maps.clone(),
            placed: pre.placed.clone(),
            held: Vec::new(),
            bytes: pre.bytes,
        };
        h.use_precopy(pre);
        let fds = h.write_state(|_| parts).expect("written");
        let raw: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
        // The state's memfd, `parts - 1` more for what came since, and
        // those written ahead.
        assert_eq!(raw.len(), parts + pre_files(&h));
        let fresh: u64 = raw[..parts].iter().map(|&fd| size(fd)).sum();
        assert!(
            (since..since + (1 << 20)).contains(&fresh),
            "{parts} parts: {fresh} bytes written, {since} new"
        );
        let back = Handover::inherit(raw[0]).expect("read back");
        assert!(ring_data(&back.commands) == want, "{parts} parts: the rings read back differ");
    }
}

#[tokio::test(start_paused = true)]
async fn a_state_of_version_2_has_its_ring_bytes_in_order_after_it() {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    // As a daemon before version 3 wrote it: no parts, no places, every
    // chunk's bytes after the state, in order.
    let mut commands = sample();
    let mut bytes = Vec::new();
    for (k, ring) in commands.iter_mut().flat_map(|c| &mut c.rings).enumerate() {
        let data = Bytes::from(vec![b'a' + k as u8; 5]);
        bytes.extend_from_slice(&data);
        ring.data = vec![data];
    }
    let named = BTreeMap::new();
    let wire = WireRef {
        version: 2,
        commands: &commands,
        shells: &[],
        fds: Vec::new(),
        named: &named,
        parts: Vec::new(),
        places: Vec::new(),
    };
    let header = rmp_serde::to_vec_named(&wire).expect("encodes");
    let mut file = std::fs::File::from(sys::memfd(c"test").expect("memfd"));
    file.write_all(&(header.len() as u64).to_le_bytes()).expect("written");
    file.write_all(&header).expect("written");
    file.write_all(&bytes).expect("written");
    let back = Handover::inherit(OwnedFd::from(file).into_raw_fd()).expect("read back");
    let got: Vec<u8> = back.commands.iter().flat_map(|c| &c.rings).flat_map(|r| r.data.concat()).collect();
    assert_eq!(got, bytes);
}

/// Every ring's chunks, in the state's order.
fn ring_data(commands: &[Frozen]) -> Vec<Vec<Bytes>> {
    commands.iter().flat_map(|c| &c.rings).map(|r| r.data.clone()).collect()
}

fn pre_files(h: &Handover) -> usize {
    h.precopy.as_ref().map_or(0, |p| p.files.len())
}

#[test]
fn chunks_split_evenly_at_chunk_boundaries() {
    let sizes = [5usize, 1, 1, 1, 100, 3, 0, 7];
    let chunks: Vec<Bytes> = sizes.iter().map(|&n| Bytes::from(vec![1u8; n])).collect();
    let refs: Vec<&Bytes> = chunks.iter().collect();
    for n in 1..=10 {
        let parts = split_evenly(&refs, n);
        assert!((1..=n).contains(&parts.len()), "{n}: {} parts", parts.len());
        assert!(parts.iter().all(|p| !p.is_empty()), "{n}: an empty part");
        let again: Vec<&Bytes> = parts.concat();
        assert_eq!(again, refs, "{n}: the parts are not the chunks in order");
    }
    // The 100-byte chunk is most of the bytes: with two parts it ends the
    // first.
    assert_eq!(split_evenly(&refs, 2)[0].len(), 5);
    assert_eq!(split_evenly(&[], 3), vec![&[] as &[&Bytes]]);
}

/// A copy of a frozen command (it is not `Clone`), through its encoding.
fn copy(f: &Frozen) -> Frozen {
    let mut c: Frozen =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(f).expect("encodes")).expect("decodes");
    c.rings[0].data = f.rings[0].data.clone();
    c.rings[1].data = f.rings[1].data.clone();
    c
}

#[test]
fn a_state_of_the_version_before_shells_decodes_without_shells() {
    // A daemon of version 1 restarting into this one (an upgrade).
    let golden = std::fs::read(golden_of(1)).expect("the version 1 golden file");
    let wire = Wire::decode(&golden).expect("version 1 is still read");
    assert_eq!(wire.commands.len(), 2);
    assert!(wire.shells.is_empty());
}

#[test]
fn a_state_of_another_version_is_refused_by_its_version_alone() {
    // Commands this version cannot decode at all: the version is read
    // first, so the error names it.
    #[derive(Serialize)]
    struct Future {
        version: u32,
        commands: Vec<u8>,
        something_new: bool,
    }
    let header =
        rmp_serde::to_vec_named(&Future { version: VERSION + 1, commands: vec![1], something_new: true })
            .expect("encodes");
    let e = Wire::decode(&header).err().expect("another version is refused");
    assert!(e.to_string().contains(&format!("version {}", VERSION + 1)), "{e}");
}

/// Writes the golden file for the current `VERSION`: run it once after
/// bumping the version, and check the file in.
#[tokio::test(start_paused = true)]
#[ignore = "writes the golden file"]
async fn write_golden() {
    let path = golden_path();
    let shells = [crate::shell::FrozenShell::sample()];
    let state =
        encode(&sample(), &shells, vec![7, 8, 9, 10, 11, 12, 13], &BTreeMap::from([("listener".into(), 10)]));
    std::fs::write(&path, state).expect("golden file written");
    eprintln!("wrote {}", path.display());
}

/// A state that sets every field.
fn sample() -> Vec<Frozen> {
    let ring = |end: u64| FrozenRing { cap: 1 << 20, end, chunks: vec![(end - 5, 3, 5)], data: Vec::new() };
    let mut writers = Writers::default();
    let _ = writers.admit(&StdinSeq { writer: "w1".into(), offset: 0 }, Bytes::from_static(b"hello"));
    let life = Lifetimes {
        timeout: Some(Duration::from_secs(60)),
        idle_timeout: Some(Duration::from_secs(30)),
        ttl: Some(Duration::from_secs(300)),
        kill_on_disconnect: true,
        max_output_bytes: Some(1 << 30),
        output_limit: OutputLimit::Truncate,
        kill_grace: Duration::from_secs(2),
        drain_grace: Duration::from_millis(500),
    };
    let exit = ExitInfo {
        code: Some(3),
        signal: None,
        core_dumped: false,
        reason: ExitReason::TimedOut,
        wall: Duration::from_millis(1234),
        user_us: 10,
        sys_us: 20,
        max_rss_kb: 30,
        ends: [5, 10],
        truncated: true,
        cwd: Some("/tmp".into()),
    };
    let reaped =
        Reaped { code: Some(0), signal: Some(9), core_dumped: true, user_us: 1, sys_us: 2, max_rss_kb: 3 };
    let live = sample_live(reaped, writers);
    let frozen = |id: &str, phase: Phase| Frozen {
        ident: Identity {
            id: id.into(),
            name: Some(format!("name-{id}")),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            argv: vec!["bash".into(), "-c".into(), "true".into()],
            pid: 4242,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            shell: Some("sh1".into()),
            request_key: Some("key-1".into()),
        },
        rings: [ring(5), ring(10)],
        seq: 9,
        size: Some((TermSize { rows: 24, cols: 80 }, 2)),
        ever_attached: true,
        life: life.clone(),
        phase,
    };
    vec![
        frozen("c1", Phase::Live(Box::new(live))),
        frozen("c2", Phase::Held { exit, ttl_left: Some(Duration::from_secs(100)) }),
    ]
}

fn sample_live(reaped: Reaped, writers: Writers) -> Live {
    let now = tokio::time::Instant::now();
    let at = |d: Duration| Some(now + d);
    Live {
        state: LiveState {
            started: now - Duration::from_millis(1500),
            reaped: Some((reaped, Duration::from_millis(1400))),
            reason: Some(ExitReason::Killed),
            timeout_at: at(Duration::from_secs(58)),
            sigkill_at: at(Duration::from_secs(1)),
            idle_at: at(Duration::from_secs(29)),
            drain_until: at(Duration::from_millis(400)),
            truncated: true,
            remove_after_exit: true,
            terminated: vec![Process::remember(4243), Process::remember(4244)],
            stop_seen: false,
        },
        cwd: Some("/srv".into()),
        outputs: [Some(7), Some(8)],
        master: Some(9),
        stdin: FrozenStdin {
            fd: Some(10),
            open: true,
            pending: serde_bytes::ByteBuf::from(b"pending".to_vec()),
            close: true,
            writers: writers.freeze(),
        },
        lingering: vec![([1, 2], Duration::from_secs(5))],
    }
}
