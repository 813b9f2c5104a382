//! `ssi rexec -n 1,2,3` and `ssi rexec --all`: one command on many nodes at once (the
//! Millennium sort's Catapult launch), each in a session of its own through this node's
//! daemon.
//!
//! Each node's stdout and stderr are kept apart: with `prefix`, line by line as they come,
//! each line prefixed `N: `; without, each node's output whole, in node order, once every
//! command ended. Standard input is not passed on (each command reads end of file); the
//! signals `rexec` passes on go to every command. The tool exits with the worst status: the
//! highest exit code, a death by signal counting as 128 + the signal, a node that could not
//! run the command as 255 (with the reason on stderr).

use std::io::Write;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::control::proto::{exec_in, exec_out, ExecIn, ExecStart};
use crate::error::{Error, Result};
use crate::rexec::{control, exec_start, send, RexecOptions, FORWARDED};
use crate::{bail, failed};

/// How one node's command ended, and what it wrote when not streamed.
struct Ended {
    status: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `o` on every node of `nodes` and exits with the worst status.
pub fn rexec_on(o: RexecOptions, nodes: Vec<u32>, prefix: bool) -> Result<std::convert::Infallible> {
    if o.tty {
        bail!("-t needs one node");
    }
    if nodes.is_empty() {
        bail!("--prefix needs the nodes to run on (-n 1,2,3 or --all)");
    }
    let starts: Vec<(u32, ExecStart)> = nodes.iter().map(|n| Ok((*n, exec_start(&o, *n, false)?))).collect::<Result<_>>()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ended = rt.block_on(async move {
        let (signals, _) = broadcast::channel::<i32>(16);
        for sig in FORWARDED {
            use tokio::signal::unix::{signal, SignalKind};
            let mut st = signal(SignalKind::from_raw(sig))?;
            let signals = signals.clone();
            tokio::spawn(async move {
                while st.recv().await.is_some() {
                    let _ = signals.send(sig);
                }
            });
        }
        let sessions: Vec<_> = starts
            .into_iter()
            .map(|(node, start)| tokio::spawn(session(o.dir.clone(), node, start, signals.subscribe(), prefix)))
            .collect();
        let mut ended = Vec::new();
        for (s, node) in sessions.into_iter().zip(nodes) {
            let r = s.await.map_err(|e| failed!("{e}")).and_then(|r| r);
            ended.push(r.unwrap_or_else(|e| {
                eprintln!("ssi rexec: node {node}: {e}");
                Ended { status: 255, stdout: vec![], stderr: vec![] }
            }));
        }
        Ok::<_, Error>(ended)
    })?;
    drop(rt);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in &ended {
        let _ = out.write_all(&e.stdout);
        let _ = err.write_all(&e.stderr);
    }
    let _ = out.flush();
    let worst = ended.iter().map(|e| e.status).max().unwrap_or(0);
    std::process::exit(worst)
}

/// One node's session: its command's output (streamed with a prefix, or kept), and how it ended.
async fn session(
    dir: std::path::PathBuf,
    node: u32,
    start: ExecStart,
    mut signals: broadcast::Receiver<i32>,
    prefix: bool,
) -> Result<Ended> {
    let mut client = control(&dir).await?;
    let (tx, rx) = mpsc::channel::<ExecIn>(16);
    send(&tx, exec_in::Msg::Start(start));
    send(&tx, exec_in::Msg::Eof(true));
    let mut answers = client.exec(ReceiverStream::new(rx)).await.map_err(|s| failed!("{}", s.message()))?.into_inner();
    let mut e = Ended { status: 0, stdout: vec![], stderr: vec![] };
    let (mut out_line, mut err_line) = (Lines::new(node, prefix), Lines::new(node, prefix));
    loop {
        tokio::select! {
            m = answers.message() => {
                let m = m.map_err(|s| failed!("{}", s.message()))?;
                match m.and_then(|m| m.msg) {
                    Some(exec_out::Msg::Stdout(d)) => out_line.take(&d, &mut e.stdout, &mut std::io::stdout()),
                    Some(exec_out::Msg::Stderr(d)) => err_line.take(&d, &mut e.stderr, &mut std::io::stderr()),
                    Some(exec_out::Msg::Started(_)) => {}
                    Some(exec_out::Msg::Exit(x)) => {
                        out_line.finish(&mut std::io::stdout());
                        err_line.finish(&mut std::io::stderr());
                        e.status = if x.code < 0 { 128 + x.signal } else { x.code };
                        return Ok(e);
                    }
                    Some(exec_out::Msg::Error(x)) => return Err(failed!("{x}")),
                    None => return Err(failed!("the daemon closed the session without an exit status")),
                }
            }
            Ok(sig) = signals.recv() => send(&tx, exec_in::Msg::Signal(sig)),
        }
    }
}

/// A stream of one node's output: kept whole, or written a prefixed line at a time.
struct Lines {
    prefix: Option<Vec<u8>>,
    partial: Vec<u8>,
}

impl Lines {
    fn new(node: u32, prefix: bool) -> Lines {
        Lines { prefix: prefix.then(|| format!("{node}: ").into_bytes()), partial: Vec::new() }
    }

    fn take(&mut self, data: &[u8], kept: &mut Vec<u8>, to: &mut impl Write) {
        let Some(prefix) = &self.prefix else {
            kept.extend_from_slice(data);
            return;
        };
        self.partial.extend_from_slice(data);
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            // One write per line: lines of different nodes never mix.
            let _ = to.write_all(&[prefix.as_slice(), &line].concat()).and_then(|_| to.flush());
        }
    }

    /// The last line, if it had no newline.
    fn finish(&mut self, to: &mut impl Write) {
        if let (Some(prefix), false) = (&self.prefix, self.partial.is_empty()) {
            let _ = to.write_all(&[prefix.as_slice(), &self.partial, b"\n"].concat()).and_then(|_| to.flush());
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn prefixed_output_comes_out_in_whole_lines() {
        let (mut l, mut kept, mut out) = (Lines::new(3, true), Vec::new(), Vec::new());
        l.take(b"one\ntw", &mut kept, &mut out);
        assert_eq!(out, b"3: one\n");
        l.take(b"o\nthree", &mut kept, &mut out);
        l.finish(&mut out);
        assert_eq!(out, b"3: one\n3: two\n3: three\n");
        assert!(kept.is_empty());
        let (mut l, mut out) = (Lines::new(1, false), Vec::new());
        l.take(b"as it is", &mut kept, &mut out);
        l.finish(&mut out);
        assert_eq!((kept.as_slice(), out.as_slice()), (&b"as it is"[..], &b""[..]));
    }
}
