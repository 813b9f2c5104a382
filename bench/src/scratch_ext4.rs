//! A fresh, journaled ext4 file system on a loop device, for a benchmark whose baseline is
//! "a local ext4 directory" and whose other cases keep their files on the same disk.
//!
//! Why not the temp directory as it is: this machine's root file system is ext4 *without a
//! journal*, and such an ext4 will not reuse an inode deleted in the last minute (five when
//! its block is dirty): each create scans past every recently deleted inode of the group
//! (`recently_deleted` in the kernel's profile). After a benchmark deletes thousands of files,
//! creates anywhere near them cost up to 0.75 ms of CPU, and how much depends on which case ran
//! before. A new journaled ext4 per run is the disk a server would have, the same for all.

use crate::error::{Context, Error, Result};
use ssi_node::bail;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ScratchExt4 {
    path: PathBuf,
    image: PathBuf,
}

impl ScratchExt4 {
    /// Makes an ext4 of `size_mib` (a sparse file beside `at`) and mounts it on the directory
    /// `at`.
    pub fn mount(at: &Path, size_mib: u64) -> Result<ScratchExt4> {
        let image = at.with_extension("img");
        std::fs::File::create(&image)?.set_len(size_mib << 20).with_context(|| format!("sizing {}", image.display()))?;
        // An inode per 4 KiB, not mkfs's 16 KiB: the create case makes empty files for its whole
        // budget, and a fast machine made more than a 2 GiB disk's default 131,072 in a second
        // (ENOSPC before any data was written).
        let out = Command::new("mkfs.ext4").args(["-q", "-F", "-i", "4096"]).arg(&image).output().context("mkfs.ext4 (e2fsprogs)")?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&image);
            bail!("mkfs.ext4 {}: {}", image.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        let out = Command::new("mount").args(["-o", "loop"]).arg(&image).arg(at).output().context("mount")?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&image);
            bail!("cannot mount an ext4 image on a loop device: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(ScratchExt4 { path: at.to_path_buf(), image })
    }
}

impl Drop for ScratchExt4 {
    fn drop(&mut self) {
        // `mount -o loop` sets the loop device to detach itself with the last unmount.
        if nix::mount::umount(&self.path).is_err() {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
