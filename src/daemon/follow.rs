//! `credport log --follow` on the control socket: the one request whose answer stays open.
//!
//! The daemon answers a `log` request with `follow` set by one [`Answer`] line holding the
//! recent events (as without `follow`), then one more `Answer` line per later event that
//! passes the filter (`events` holding that one), and a line with `problems` if the reader
//! fell so far behind that events were dropped for it. It stops when the client hangs up.
//! [`follow`] is the client's side.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::broadcast::error::RecvError;

use super::protocol::{Answer, Command, ControlError};
use crate::journal::{Journal, Query};

/// Streams `journal`'s events for `query` to `w` until the client (reading side `r`)
/// hangs up or a write fails.
pub async fn stream<R, W>(journal: &Journal, query: &Query, mut r: R, mut w: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (backlog, mut rx) = journal.follow(&query.filter, query.limit);
    if send(&mut w, events(backlog)).await.is_err() {
        return;
    }
    let mut buf = [0u8; 256];
    loop {
        let answer = tokio::select! {
            next = rx.recv() => match next {
                Ok(e) if query.filter.matches(&e) => events(vec![e]),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Answer {
                    ok: true,
                    problems: Some(format!("{n} events were not shown: this reader fell behind")),
                    ..Answer::default()
                },
                Err(RecvError::Closed) => return,
            },
            // Whatever the client sends is ignored; end of file or an error means it left.
            read = r.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        if send(&mut w, answer).await.is_err() {
            return;
        }
    }
}

fn events(events: Vec<crate::journal::Event>) -> Answer {
    Answer {
        ok: true,
        events: Some(events),
        ..Answer::default()
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, answer: Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    w.flush().await
}

/// Sends `query` (with `follow` set) to the daemon at the control socket `path` and calls
/// `each` with every answer: first the recent events, then each later one (or a note in
/// `problems`). Returns when `each` fails (the reader went away) or the daemon hangs up.
pub async fn follow(
    path: &Path,
    query: &Query,
    mut each: impl FnMut(Answer) -> std::io::Result<()>,
) -> Result<(), ControlError> {
    let io = |reason: String| ControlError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let stream = super::protocol::connect(path).await?;
    let (r, mut w) = stream.into_split();
    let req = Command::Log(Query {
        follow: true,
        ..query.clone()
    });
    let mut line = serde_json::to_string(&req).map_err(|e| io(e.to_string()))?;
    line.push('\n');
    w.write_all(line.as_bytes())
        .await
        .map_err(|e| io(e.to_string()))?;
    let mut lines = BufReader::new(r).lines();
    let mut first = true;
    loop {
        let next = if first {
            tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .map_err(|_| io("no answer within 30 s".into()))?
        } else {
            lines.next_line().await
        };
        let Some(text) = next.map_err(|e| io(e.to_string()))? else {
            return Err(io("the daemon closed the connection (it stopped?)".into()));
        };
        let a: Answer = serde_json::from_str(&text).map_err(|e| io(format!("bad answer: {e}")))?;
        if !a.ok {
            return Err(ControlError::Daemon(
                a.error.unwrap_or_else(|| "unknown error".into()),
            ));
        }
        first = false;
        if each(a).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Event, Filter, What};
    use tokio::net::UnixStream;

    fn locked(stage: &str) -> Event {
        Event::new(What::Locked {
            reason: "test".into(),
        })
        .scope("orders", stage)
    }

    /// The streaming answer over a real socket pair: backlog first, then each later event
    /// that passes the filter, and the stream ends when the client hangs up.
    #[tokio::test]
    async fn streams_the_backlog_then_later_matching_events() {
        let journal = std::sync::Arc::new(Journal::default());
        journal.record(locked("prod"));
        journal.record(locked("dev"));
        let (client, server) = UnixStream::pair().unwrap();
        let (sr, sw) = server.into_split();
        let q = Query {
            filter: Filter {
                project: None,
                stage: Some("prod".into()),
            },
            limit: None,
            follow: true,
        };
        let j = journal.clone();
        let task = tokio::spawn(async move { stream(&j, &q, sr, sw).await });
        let (cr, cw) = client.into_split();
        let mut lines = BufReader::new(cr).lines();
        let first: Answer =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let backlog = first.events.unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].stage.as_deref(), Some("prod"));
        journal.record(locked("dev"));
        journal.record(locked("prod"));
        let next: Answer =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let e = next.events.unwrap();
        assert_eq!((e.len(), e[0].seq), (1, 4), "{e:?}");
        drop(cw);
        drop(lines);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the stream ends when the client hangs up")
            .unwrap();
    }
}
