//! The control socket's process commands, daemon side: `Exec` and `Kill` for the local `ssi`
//! tool. The caller is who the kernel says (SO_PEERCRED, groups from /proc); the work is
//! procmgmt's `Launcher`.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use ssi_procmgmt::launch::{ExecSpec, FromProcess, Launcher, ToProcess};
use ssi_procmgmt::spawn::{groups_of, Creds};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::control::proto::{exec_in, exec_out, ExecIn, ExecOut, Exit, KillRequest, Started};

pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOut, Status>> + Send>>;

/// The caller's credentials and pid, from the kernel.
fn caller<T>(req: &Request<T>) -> Result<(Creds, u32), Status> {
    let cred = crate::control::peer_cred(req)?;
    let pid = cred.pid().ok_or_else(|| Status::permission_denied("caller pid unavailable"))? as u32;
    let groups = groups_of(pid).map_err(|e| Status::permission_denied(format!("groups of the caller: {e}")))?;
    Ok((Creds { uid: cred.uid(), gid: cred.gid(), groups }, pid))
}

fn out(msg: exec_out::Msg) -> Result<ExecOut, Status> {
    Ok(ExecOut { msg: Some(msg) })
}

pub async fn exec(launcher: Arc<Launcher>, node: u32, req: Request<Streaming<ExecIn>>) -> Result<Response<ExecStream>, Status> {
    let (creds, pid) = caller(&req)?;
    let mut inbound = req.into_inner();
    let start = match inbound.message().await? {
        Some(ExecIn { msg: Some(exec_in::Msg::Start(s)) }) => s,
        _ => return Err(Status::invalid_argument("the first message of Exec must be its start")),
    };
    if start.argv.is_empty() {
        return Err(Status::invalid_argument("no command"));
    }
    let spec = ExecSpec {
        argv: start.argv.iter().map(|a| a.to_vec()).collect(),
        env: start.env.iter().map(|e| e.to_vec()).collect(),
        cwd: start.cwd.to_vec(),
        cwd_given: start.cwd_given,
        umask: start.umask,
        node: (start.node != 0).then_some(start.node),
        tty: start.tty.then_some((start.rows, start.cols)),
        creds,
        parent_gpid: ssi_procmgmt::gpid(node, pid),
        interpose: start.interpose.then(|| ssi_procmgmt::proto::Interpose {
            service: start.service.clone(),
            policy: start.policy.clone(),
            weight: start.weight,
        }),
    };
    // The tool's messages, in order; the channel closes when the tool goes away.
    let (to_proc, from_tool) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            let m = match m.msg {
                Some(exec_in::Msg::Stdin(d)) => ToProcess::Stdin(d),
                Some(exec_in::Msg::Eof(_)) => ToProcess::Eof,
                Some(exec_in::Msg::Signal(s)) => ToProcess::Signal(s),
                Some(exec_in::Msg::Resize(w)) => ToProcess::Resize(w.rows, w.cols),
                _ => continue,
            };
            if to_proc.send(m).await.is_err() {
                break;
            }
        }
    });
    let (to_tool, mut from_proc) = mpsc::channel(32);
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let forward = |ev: FromProcess| {
            out(match ev {
                FromProcess::Started { gpid, node } => exec_out::Msg::Started(Started { gpid, node }),
                FromProcess::Stdout(d) => exec_out::Msg::Stdout(d),
                FromProcess::Stderr(d) => exec_out::Msg::Stderr(d),
                FromProcess::Exited { code, signal } => exec_out::Msg::Exit(Exit { code, signal }),
            })
        };
        let run = launcher.exec(spec, to_tool, from_tool);
        tokio::pin!(run);
        // A failed send means the tool is gone; the launcher notices its input closing.
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(ev) = from_proc.recv() => {
                    let _ = tx.send(forward(ev)).await;
                }
            }
        };
        while let Ok(ev) = from_proc.try_recv() {
            let _ = tx.send(forward(ev)).await;
        }
        if let Err(e) = result {
            let _ = tx.send(out(exec_out::Msg::Error(e.to_string()))).await;
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as ExecStream))
}

pub async fn kill(launcher: &Launcher, req: Request<KillRequest>) -> Result<Response<crate::control::proto::Empty>, Status> {
    let (creds, _) = caller(&req)?;
    let r = req.into_inner();
    launcher.kill(&creds, r.gpid, r.signal).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
    Ok(Response::new(crate::control::proto::Empty {}))
}
