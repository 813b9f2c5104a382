//! Attributes and extended attributes.

use std::ffi::OsStr;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use fuser::{Errno, FileHandle, INodeNo, ReplyAttr, ReplyXattr, Request, TimeOrNow};

use super::convert::{creds, fid, file_attr};
use super::{Client, TTL};
use crate::proto::*;

impl Client {
    // The kernel request's fields, as fuser hands them over.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn setattr_k(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        or_reply!(reply, self.settle(vol, &h));
        let ts = |t: Option<TimeOrNow>| {
            t.map(|t| match t {
                TimeOrNow::Now => TimeSet { now: true, ns: 0 },
                TimeOrNow::SpecificTime(st) => TimeSet {
                    now: false,
                    ns: match st.duration_since(UNIX_EPOCH) {
                        Ok(d) => d.as_nanos() as i64,
                        Err(e) => -(e.duration().as_nanos() as i64),
                    },
                },
            })
        };
        let r = SetAttrReq { fid: fid(&h), mode, uid, gid, size, atime: ts(atime), mtime: ts(mtime), fh: fh.map(|f| f.0).unwrap_or(0) };
        // Attributes change; extended attributes do not (a chown may strip a capability, but
        // never adds one: "absent" stays true).
        self.cache.forget_dir(ino.0);
        match self.call(vol, Some(creds(req)), |s| {
            let r = r.clone();
            async move { s.set_attr(r).await }
        }) {
            Ok(a) => {
                self.holder.note_attr(vol, &h, &a);
                reply.attr(&TTL, &file_attr(ino.0, &a))
            }
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn getxattr_k(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_string_lossy();
        if self.cache.xattr_absent(ino.0, &name) || self.node(ino.0).is_ok_and(|(v, _, _)| self.synthetic.contains_key(&v)) {
            return reply.error(Errno::ENODATA);
        }
        let (vol, h, _) = or_reply!(reply, self.node(ino.0));
        let r = XattrReq { fid: fid(&h), name: name.to_string(), size, value: Bytes::new(), flags: 0 };
        let t = self.cache.ticket();
        match self.call(vol, Some(creds(req)), |s| {
            let r = r.clone();
            async move { s.get_xattr(r).await }
        }) {
            Ok(d) if size == 0 => reply.size(d.size),
            Ok(d) => reply.data(&d.data),
            Err(e) => {
                if e == Errno::ENODATA {
                    self.cache.put_xattr_absent(t, ino.0, &name);
                }
                reply.error(e)
            }
        }
    }
}
