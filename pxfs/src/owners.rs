//! The client's road to the volume servers: each volume's stub, resolved once, and one
//! invocation on it with the caller's credentials, resolved again when the server restarted.

use std::collections::HashMap;
use std::time::Duration;

use crate::errno::Errno;
use parking_lot::Mutex;
use ssi_orb::proto::Creds;
use ssi_orb::{error::code, CallOptions, Orb, OrbError, Received};

use crate::proto::VolumeStub;
use crate::server::volume_name;

/// Synthetic volumes (see `synthetic`) get ids from here on; no server serves them.
pub const SYNTHETIC_BASE: u32 = 1 << 20;
/// How long one invocation may take before the caller sees EIO (a down node fails sooner).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The volume servers' stubs, resolved once per volume (shared by the FUSE handlers and the
/// cache manager).
pub struct Owners {
    orb: Orb,
    nodes: HashMap<u32, u32>,
    stubs: Mutex<HashMap<u32, VolumeStub>>,
}

impl Owners {
    pub fn new(orb: Orb, nodes: HashMap<u32, u32>) -> Self {
        Owners { orb, nodes, stubs: Mutex::new(HashMap::new()) }
    }

    pub async fn stub(&self, vol: u32) -> Result<VolumeStub, OrbError> {
        if let Some(s) = self.stubs.lock().get(&vol) {
            return Ok(s.clone());
        }
        let node = self.nodes.get(&vol).copied().ok_or(OrbError::UnknownNode(0))?;
        let h = self.orb.resolve(node, &volume_name(vol)).await?;
        let s = VolumeStub::new(h)?;
        self.stubs.lock().insert(vol, s.clone());
        Ok(s)
    }

    /// The node that owns volume `vol`.
    pub fn node_of(&self, vol: u32) -> Option<u32> {
        self.nodes.get(&vol).copied()
    }

    /// Forgets a stub whose server restarted or went down.
    pub fn drop_stub(&self, vol: u32) {
        self.stubs.lock().remove(&vol);
    }
}

/// One invocation on volume `vol`'s server as `who`. A reference to a server that has
/// restarted is refused before it runs (StaleReference), so it is resolved again and retried.
pub async fn invoke<T, F, Fut>(owners: &Owners, vol: u32, who: Option<Creds>, f: F) -> Result<T, Errno>
where
    F: Fn(VolumeStub) -> Fut,
    Fut: std::future::Future<Output = Result<Received<T>, OrbError>>,
{
    if vol >= SYNTHETIC_BASE {
        // Synthetic volumes answer reads in the client; everything that reaches here changes.
        return Err(Errno::EROFS);
    }
    let mut opts = CallOptions::default().deadline(CALL_DEADLINE);
    opts.creds = who;
    let mut last = OrbError::Shutdown;
    for _ in 0..2 {
        let stub = match owners.stub(vol).await {
            Ok(s) => s.with_options(opts.clone()),
            Err(e) => return Err(errno_of(&e)),
        };
        match f(stub).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e @ OrbError::Exception(_)) if matches!(e.exception_code(), Some(code::STALE_REFERENCE) | Some(code::OBJECT_NOT_EXIST)) => {
                owners.drop_stub(vol);
                last = e;
            }
            Err(e) => {
                if e.is_node_down() {
                    owners.drop_stub(vol);
                }
                return Err(errno_of(&e));
            }
        }
    }
    Err(errno_of(&last))
}

/// The errno an application sees for a failed invocation.
pub fn errno_of(e: &OrbError) -> Errno {
    if let Some(n) = e.os_errno() {
        return Errno::from_i32(n);
    }
    match e {
        OrbError::Exception(x) if x.code == code::BAD_REQUEST => Errno::EINVAL,
        OrbError::Exception(x) if x.code == code::PERMISSION_DENIED => Errno::EACCES,
        _ => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssi_orb::Exception;

    #[test]
    fn an_application_sees_the_servers_errno_or_eio() {
        let ex = |e: Exception| errno_of(&OrbError::Exception(e));
        assert_eq!(ex(Exception::errno(libc::ENOSPC, "full")), Errno::ENOSPC, "the owner's system call's errno");
        assert_eq!(ex(Exception::errno(libc::EACCES, "no")), Errno::EACCES);
        assert_eq!(ex(Exception::new(code::BAD_REQUEST, "x")), Errno::EINVAL);
        assert_eq!(ex(Exception::new(code::PERMISSION_DENIED, "x")), Errno::EACCES);
        assert_eq!(errno_of(&OrbError::node_down(2, "gone")), Errno::EIO, "a dead owner: EIO, never a hang");
        assert_eq!(errno_of(&OrbError::DeadlineExceeded(Duration::from_secs(30))), Errno::EIO);
    }
}
