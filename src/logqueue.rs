//! The daemon's log writer: whole lines are appended to one in-memory buffer, and one
//! background thread writes that buffer out in batches.
//!
//! A request never waits on stderr (a pipe to journald, a file, a terminal): it copies its
//! line into the buffer under a mutex nobody holds for longer than a copy. The writer
//! thread parks while there is nothing to write (no timer: an idle daemon is never woken),
//! and when woken writes everything queued at once, then lets lines gather for [`GATHER`]
//! before it looks again. So a line after a quiet spell is written at once, and a burst of
//! issuances costs one `write(2)` and one wake-up per [`GATHER`], instead of a
//! wake-up, a channel message and an allocation per line (which is what a per-line queue
//! such as `tracing-appender`'s costs, and what showed as the writer thread preempting the
//! request thread hundreds of times a second on a one-CPU daemon).
//!
//! Nothing is dropped: when [`LIMIT`] bytes are queued, a line waits for the writer (as a
//! bounded channel would), and after the writer has stopped a line is written directly.
//! [`Flush`], held by `main`, stops the writer and writes what is left when it drops; a
//! writer that ends any other way (a panic) hands what is still queued to the direct path.
//! An idle writer keeps no batch-sized buffers.
//!
//! On Linux the writer runs at a lower priority (nice 10) than the request threads, so a
//! request that arrives while a batch is being written takes the CPU at once.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes queued at most before a line waits for the writer (at ~250 bytes a line, about
/// 4,000 lines).
pub const LIMIT: usize = 1 << 20;

/// After writing a batch, how long the writer lets lines gather before it takes the next
/// (so at most one write, and one wake-up, per this time).
pub const GATHER: Duration = Duration::from_millis(10);

/// A handle that queues lines for the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines (or the end).
    lines: Condvar,
    /// A line waits here for room.
    room: Condvar,
    /// Where lines go directly once the writer has stopped.
    direct: Box<Direct>,
}

/// Writes a line directly (once the writer has stopped).
type Direct = dyn Fn(&[u8]) + Send + Sync;

#[derive(Default)]
struct State {
    queued: Vec<u8>,
    /// The writer is parked on `lines` (only then does a new line wake it).
    parked: bool,
    /// No writer any more: lines are written directly.
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops the writer when dropped, after it has written every queued line.
#[must_use = "dropping it stops the log writer"]
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogQueue {
    /// Starts the writer thread, writing to `out`; `direct` writes a line once the writer
    /// has stopped (or could not start).
    pub fn start<W>(out: W, direct: impl Fn(&[u8]) + Send + Sync + 'static) -> (LogQueue, Flush)
    where
        W: Write + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            lines: Condvar::new(),
            room: Condvar::new(),
            direct: Box::new(direct),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("credport-log".into())
            .spawn(move || write_batches(&for_thread, out));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(_) => {
                shared.lock().stopped = true;
                None
            }
        };
        (
            LogQueue {
                shared: shared.clone(),
            },
            Flush { shared, thread },
        )
    }

    /// Queues one or more whole lines (newlines included). Waits only while [`LIMIT`]
    /// bytes are queued.
    pub fn push(&self, line: &[u8]) {
        let mut st = self.shared.lock();
        while st.queued.len() >= LIMIT && !st.stopped {
            st = self.shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.stopped {
            drop(st);
            (self.shared.direct)(line);
            return;
        }
        st.queued.extend_from_slice(line);
        let wake = std::mem::take(&mut st.parked);
        drop(st);
        if wake {
            self.shared.lines.notify_one();
        }
    }
}

impl std::fmt::Debug for LogQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogQueue")
    }
}

/// The writer thread: waits for lines, writes what is queued, and under load lets the next
/// batch gather; returns when stopped and nothing is left.
fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    /// Marks the queue stopped however the thread ends, so no line ever waits for a
    /// writer that is gone, and writes what was still queued directly (nothing, after a
    /// normal stop; the lines behind a batch whose write panicked, otherwise). The lock is
    /// held meanwhile, so a line pushed now goes directly after them, in order.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let mut st = self.0.lock();
            st.stopped = true;
            let left = std::mem::take(&mut st.queued);
            if !left.is_empty() {
                (self.0.direct)(&left);
            }
            drop(st);
            self.0.room.notify_all();
        }
    }
    let _stopped = Stopped(shared);
    background_priority();
    let mut batch = Vec::new();
    loop {
        let mut st = shared.lock();
        if st.queued.is_empty() && !st.stopped {
            // Going idle: give back what a burst grew, so a daemon between bursts holds
            // no batch-sized buffers.
            shrink(&mut st.queued);
            shrink(&mut batch);
        }
        while st.queued.is_empty() && !st.stopped {
            st.parked = true;
            st = shared.lines.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.parked = false;
        if st.queued.is_empty() {
            // Stopped, and everything is written.
            let _ = out.flush();
            return;
        }
        let stopping = st.stopped;
        std::mem::swap(&mut st.queued, &mut batch);
        drop(st);
        shared.room.notify_all();
        // A log that cannot be written (a closed stderr) loses its lines, not the daemon.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if !stopping {
            // Let the next lines gather: under load this is one write per GATHER; a line
            // after a quiet spell finds the writer parked and is written at once.
            std::thread::sleep(GATHER);
        }
    }
}

/// Bytes of buffer the writer keeps while idle (a quiet daemon's lines fit).
const IDLE_CAPACITY: usize = 16 << 10;

/// Frees an empty buffer that grew past [`IDLE_CAPACITY`].
fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > IDLE_CAPACITY {
        *buf = Vec::new();
    }
}

/// Gives the calling thread a lower scheduling priority than the request threads (Linux
/// `nice` is per thread): a request that arrives while a batch is written takes the CPU
/// at once, and the writer keeps its (small) share while they are busy.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on this thread's id only
        // changes this thread's nice value. A failure leaves the default priority.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE);
        }
    }
}

/// The writer thread's nice value (0 is the default, 19 the lowest priority). Measured
/// side by side (docs/PERFORMANCE.md): at 0 the writer, woken every [`GATHER`], delayed
/// the request that arrived while it wrote, enough to move a single client's p99 to
/// 1.76 x the baseline's; at 10 that p99 was 1.05 x and at 19 1.03 x, while at 64
/// connections 19 starved it longer (bigger batches) than 10.
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 10;

impl Drop for Flush {
    fn drop(&mut self) {
        // The writer sees `stopped` only once the queue is empty, so it writes the rest
        // first; lines queued after this are written directly.
        {
            let mut st = self.shared.lock();
            st.stopped = true;
            st.parked = false;
        }
        self.shared.lines.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// `tracing`'s formatter writes each event as one `write_all` of the whole line.
impl Write for LogQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into shared memory that counts its `write` calls.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn direct_into(sink: &Sink) -> impl Fn(&[u8]) + Send + Sync + 'static {
        let bytes = sink.bytes.clone();
        move |line| bytes.lock().unwrap().extend_from_slice(line)
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_flush_drops() {
        let sink = Sink::default();
        let (q, flush) = LogQueue::start(sink.clone(), direct_into(&sink));
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        q.push(format!("thread={t} line={i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        drop(flush);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread={t} ")))
                .collect();
            let want: Vec<String> = (0..5_000).map(|i| format!("thread={t} line={i}")).collect();
            assert_eq!(mine, want, "thread {t}'s lines, whole and in order");
        }
        // Batched: far fewer writes than lines.
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 20_000, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (q, _flush) = LogQueue::start(sink.clone(), direct_into(&sink));
        q.push(b"one\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.bytes.lock().unwrap().as_slice() != b"one\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was not written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The writer parked again: a second line after a pause is written too.
        std::thread::sleep(Duration::from_millis(20));
        q.push(b"two\n");
        while sink.bytes.lock().unwrap().as_slice() != b"one\ntwo\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "the second line was not written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_full_queue_waits_for_the_writer_instead_of_dropping() {
        /// A writer slow enough that the queue fills.
        struct Slow(Sink);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(2));
                self.0.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (q, flush) = LogQueue::start(Slow(sink.clone()), direct_into(&sink));
        let line = [b'x'; 1023]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // Four times the limit.
        for _ in 0..(4 * LIMIT / line.len()) {
            q.push(&line);
        }
        drop(flush);
        assert_eq!(
            sink.bytes.lock().unwrap().len(),
            4 * LIMIT / line.len() * line.len()
        );
    }

    #[test]
    fn after_the_flush_lines_are_written_directly() {
        let sink = Sink::default();
        let (q, flush) = LogQueue::start(sink.clone(), direct_into(&sink));
        q.push(b"queued\n");
        drop(flush);
        q.push(b"direct\n");
        assert_eq!(sink.bytes.lock().unwrap().as_slice(), b"queued\ndirect\n");
    }

    #[test]
    fn tracing_writes_through_it() {
        use tracing_subscriber::fmt::MakeWriter;
        let sink = Sink::default();
        let (q, flush) = LogQueue::start(sink.clone(), direct_into(&sink));
        q.make_writer().write_all(b"from tracing\n").unwrap();
        drop(flush);
        assert_eq!(sink.bytes.lock().unwrap().as_slice(), b"from tracing\n");
    }

    #[test]
    fn lines_behind_a_write_that_panicked_are_written_directly() {
        /// Signals when a write starts, waits to be let go, then panics.
        struct Panics {
            started: std::sync::mpsc::Sender<()>,
            go: std::sync::mpsc::Receiver<()>,
        }
        impl Write for Panics {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                let _ = self.started.send(());
                let _ = self.go.recv();
                panic!("the log writer's write panicked (on purpose, in a test)");
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (started, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go) = std::sync::mpsc::channel();
        let sink = Sink::default();
        let (q, flush) = LogQueue::start(Panics { started, go }, direct_into(&sink));
        q.push(b"lost in the panicking write\n");
        started_rx.recv().unwrap();
        q.push(b"queued behind it\n");
        go_tx.send(()).unwrap();
        // The writer is gone; wait until the queue says so, then a new line goes directly.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !q.shared.lock().stopped {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        q.push(b"after\n");
        drop(flush);
        assert_eq!(
            sink.bytes.lock().unwrap().as_slice(),
            b"queued behind it\nafter\n"
        );
    }

    #[test]
    fn the_writer_gives_back_a_bursts_buffers_when_idle() {
        let sink = Sink::default();
        let (q, _flush) = LogQueue::start(sink.clone(), direct_into(&sink));
        let line = [b'y'; 4095]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        for _ in 0..256 {
            q.push(&line);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            {
                let st = q.shared.lock();
                if st.parked && sink.bytes.lock().unwrap().len() == 256 * line.len() {
                    assert!(
                        st.queued.capacity() <= IDLE_CAPACITY,
                        "{}",
                        st.queued.capacity()
                    );
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never parked"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
