//! POSIX conformance of PXFS, judged by ext4: the same system calls, on the same fixture,
//! as root and as an unprivileged user, on an ext4 directory, on PXFS from the volume's
//! owner and on PXFS from another node; every case must answer on PXFS as on ext4 (the
//! errno, or success and what it left). The cases and those left out: docs/posix.md.
//! Needs root and /dev/fuse (CI fails without).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use ssi_testkit::Cluster;

/// An unprivileged user (nobody) and its group.
const USER: u32 = 65534;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// "ok", or the errno's name.
fn res(r: libc::c_int) -> String {
    if r >= 0 {
        "ok".into()
    } else {
        format!("{:?}", nix::errno::Errno::last())
    }
}

fn long(n: usize) -> String {
    "n".repeat(n)
}

fn mode(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) => format!("{:o}", m.permissions().mode()),
        Err(e) => format!("{:?}", nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    }
}

/// What each case does to the fixture under `b`; the result is compared, not asserted.
fn run_case(name: &str, b: &Path) -> String {
    let p = |rel: &str| cstr(&b.join(rel));
    let open = |rel: &str, flags: libc::c_int| {
        // SAFETY: a NUL-terminated path and plain flags; the descriptor is closed at once.
        let fd = unsafe { libc::open(p(rel).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
        let r = res(fd);
        if fd >= 0 {
            // SAFETY: fd was just opened here.
            unsafe { libc::close(fd) };
        }
        r
    };
    // Every call below gets NUL-terminated paths that outlive it, live locals, plain integers.
    // SAFETY: as said just above; each descriptor opened here is closed once.
    unsafe {
        match name {
            // Names longer than NAME_MAX (255 bytes) on every call that takes one.
            "creat_255" => open(&format!("pub/{}", long(255)), libc::O_CREAT | libc::O_WRONLY),
            "creat_256" => open(&format!("pub/{}", long(256)), libc::O_CREAT | libc::O_WRONLY),
            "open_256" => open(&format!("pub/{}", long(256)), libc::O_RDONLY),
            "mkdir_256" => res(libc::mkdir(p(&format!("pub/{}", long(256))).as_ptr(), 0o755)),
            "mknod_256" => res(libc::mknod(p(&format!("pub/{}", long(256))).as_ptr(), libc::S_IFREG | 0o644, 0)),
            "mkfifo_256" => res(libc::mkfifo(p(&format!("pub/{}", long(256))).as_ptr(), 0o644)),
            "symlink_256" => res(libc::symlink(p("pub/w").as_ptr(), p(&format!("pub/{}", long(256))).as_ptr())),
            "link_256" => res(libc::link(p("pub/w").as_ptr(), p(&format!("pub/{}", long(256))).as_ptr())),
            "rename_to_256" => res(libc::rename(p("pub/mv1").as_ptr(), p(&format!("pub/{}", long(256))).as_ptr())),
            "rename_from_256" => res(libc::rename(p(&format!("pub/{}", long(256))).as_ptr(), p("pub/x").as_ptr())),
            "unlink_256" => res(libc::unlink(p(&format!("pub/{}", long(256))).as_ptr())),
            "rmdir_256" => res(libc::rmdir(p(&format!("pub/{}", long(256))).as_ptr())),
            "chmod_256" => res(libc::chmod(p(&format!("pub/{}", long(256))).as_ptr(), 0o600)),
            "chown_256" => res(libc::chown(p(&format!("pub/{}", long(256))).as_ptr(), 0, 0)),
            "truncate_256" => res(libc::truncate(p(&format!("pub/{}", long(256))).as_ptr(), 0)),
            "stat_256" => {
                let mut st: libc::stat = std::mem::zeroed();
                res(libc::stat(p(&format!("pub/{}", long(256))).as_ptr(), &mut st))
            }
            // A path of PATH_MAX - 1 bytes (from the fixture's dir), and one byte more.
            "path_4095" | "path_4096" => {
                let n = if name == "path_4095" { 4095 } else { 4096 };
                let dfd = libc::open(cstr(&b.join("pub")).as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC);
                if dfd < 0 {
                    return res(dfd);
                }
                // Directories of 200-byte names, then a file whose name makes up the length.
                let mut rel = String::new();
                while n - rel.len() > 255 + 1 {
                    rel.push_str(&format!("{}/", "d".repeat(200)));
                    let made = libc::mkdirat(dfd, CString::new(rel.trim_end_matches('/')).unwrap().as_ptr(), 0o755);
                    if made < 0 && nix::errno::Errno::last() != nix::errno::Errno::EEXIST {
                        libc::close(dfd);
                        return format!("mkdir {}", res(made));
                    }
                }
                rel.push_str(&"f".repeat(n - rel.len()));
                let c = CString::new(rel.clone()).unwrap();
                let fd = libc::openat(dfd, c.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                let mut out = format!("create {}", res(fd));
                if fd >= 0 {
                    libc::close(fd);
                    let mut st: libc::stat = std::mem::zeroed();
                    out += &format!(" stat {}", res(libc::fstatat(dfd, c.as_ptr(), &mut st, 0)));
                    out += &format!(" unlink {}", res(libc::unlinkat(dfd, c.as_ptr(), 0)));
                }
                libc::close(dfd);
                out
            }
            // Set-user-ID and set-group-ID files.
            "open_w_suid_world_writable" => open("pub/suid", libc::O_WRONLY),
            "write_clears_suid" => {
                let fd = libc::open(p("pub/suid2").as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return res(fd);
                }
                let w = libc::write(fd, b"x".as_ptr().cast(), 1);
                libc::close(fd);
                format!("write {} mode {}", res(w as libc::c_int), mode(&b.join("pub/suid2")))
            }
            "truncate_clears_suid" => {
                let r = libc::truncate(p("pub/suid3").as_ptr(), 1);
                format!("{} mode {}", res(r), mode(&b.join("pub/suid3")))
            }
            "truncate_clears_sgid" => {
                let r = libc::truncate(p("pub/sgid").as_ptr(), 1);
                format!("{} mode {}", res(r), mode(&b.join("pub/sgid")))
            }
            "chown_clears_suid" => {
                let r = libc::chown(p("pub/suid4").as_ptr(), USER, USER);
                format!("{} mode {}", res(r), mode(&b.join("pub/suid4")))
            }
            // Moving a directory to another parent rewrites its "..": write permission on it.
            "rename_foreign_dir_to_other_parent" => res(libc::rename(p("pub/rootdir").as_ptr(), p("pub/dst/rootdir").as_ptr())),
            "rename_foreign_dir_same_parent" => res(libc::rename(p("pub/rootdir2").as_ptr(), p("pub/rootdir2b").as_ptr())),
            // open(2)
            "open_missing" => open("d/missing", libc::O_RDONLY),
            "open_through_file" => open("d/f/x", libc::O_RDONLY),
            "open_excl_existing" => open("d/f", libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY),
            "open_dir_for_writing" => open("d", libc::O_WRONLY),
            "open_root_only_file" => open("d/secret", libc::O_RDONLY),
            "open_nofollow_symlink" => open("d/sl", libc::O_RDONLY | libc::O_NOFOLLOW),
            "open_symlink_loop" => open("d/loop", libc::O_RDONLY),
            "open_directory_on_file" => open("d/f", libc::O_RDONLY | libc::O_DIRECTORY),
            "open_create_in_readonly_dir" => open("ro/new", libc::O_CREAT | libc::O_WRONLY),
            "open_fifo_nonblocking_no_reader" => open("d/fifo", libc::O_WRONLY | libc::O_NONBLOCK),
            "open_trunc_readonly_file" => open("d/f", libc::O_WRONLY | libc::O_TRUNC),
            // mkdir(2)
            "mkdir_existing" => res(libc::mkdir(p("d/f").as_ptr(), 0o755)),
            "mkdir_missing_parent" => res(libc::mkdir(p("d/missing/x").as_ptr(), 0o755)),
            "mkdir_under_file" => res(libc::mkdir(p("d/f/x").as_ptr(), 0o755)),
            "mkdir_in_readonly_dir" => res(libc::mkdir(p("ro/x").as_ptr(), 0o755)),
            "mkdir_mode_umask" => {
                let r = libc::mkdir(p("pub/newdir").as_ptr(), 0o1777);
                format!("{} mode {}", res(r), mode(&b.join("pub/newdir")))
            }
            // rmdir(2)
            "rmdir_not_empty" => res(libc::rmdir(p("pub/full").as_ptr())),
            "rmdir_file" => res(libc::rmdir(p("d/f").as_ptr())),
            "rmdir_dot" => res(libc::rmdir(p("pub/empty/.").as_ptr())),
            "rmdir_missing" => res(libc::rmdir(p("d/missing").as_ptr())),
            "rmdir_in_readonly_dir" => res(libc::rmdir(p("ro/sub").as_ptr())),
            "rmdir_sticky_foreign" => res(libc::rmdir(p("sticky/rootdir").as_ptr())),
            // unlink(2)
            "unlink_dir" => res(libc::unlink(p("pub/empty").as_ptr())),
            "unlink_missing" => res(libc::unlink(p("d/missing").as_ptr())),
            "unlink_in_readonly_dir" => res(libc::unlink(p("ro/f").as_ptr())),
            "unlink_sticky_foreign" => res(libc::unlink(p("sticky/rootfile").as_ptr())),
            "unlink_through_file" => res(libc::unlink(p("d/f/x").as_ptr())),
            // rename(2)
            "rename_missing" => res(libc::rename(p("pub/missing").as_ptr(), p("pub/x").as_ptr())),
            "rename_file_onto_dir" => res(libc::rename(p("pub/mv2").as_ptr(), p("pub/empty").as_ptr())),
            "rename_dir_onto_file" => res(libc::rename(p("pub/mvdir").as_ptr(), p("pub/mv3").as_ptr())),
            "rename_dir_onto_nonempty" => res(libc::rename(p("pub/mvdir2").as_ptr(), p("pub/full").as_ptr())),
            "rename_dir_into_itself" => res(libc::rename(p("pub/mvdir3").as_ptr(), p("pub/mvdir3/sub/x").as_ptr())),
            "rename_from_readonly_dir" => res(libc::rename(p("ro/f").as_ptr(), p("pub/x2").as_ptr())),
            "rename_sticky_foreign" => res(libc::rename(p("sticky/rootfile2").as_ptr(), p("sticky/mine").as_ptr())),
            "rename_noreplace_existing" => {
                res(libc::renameat2(libc::AT_FDCWD, p("pub/mv4").as_ptr(), libc::AT_FDCWD, p("pub/mv5").as_ptr(), libc::RENAME_NOREPLACE))
            }
            "rename_exchange" => {
                let r = libc::renameat2(libc::AT_FDCWD, p("pub/xa").as_ptr(), libc::AT_FDCWD, p("pub/xb").as_ptr(), libc::RENAME_EXCHANGE);
                let a = std::fs::read_to_string(b.join("pub/xa")).unwrap_or_default();
                format!("{} xa={a}", res(r))
            }
            // link(2)
            "link_existing" => res(libc::link(p("pub/w").as_ptr(), p("pub/mv4").as_ptr())),
            "link_missing" => res(libc::link(p("pub/missing").as_ptr(), p("pub/l1").as_ptr())),
            "link_dir" => res(libc::link(p("pub/empty").as_ptr(), p("pub/l2").as_ptr())),
            "link_foreign_unwritable" => res(libc::link(p("d/f").as_ptr(), p("pub/l3").as_ptr())),
            "link_into_readonly_dir" => res(libc::link(p("pub/w").as_ptr(), p("ro/l4").as_ptr())),
            // symlink(2)
            "symlink_existing" => res(libc::symlink(p("x").as_ptr(), p("pub/w").as_ptr())),
            "symlink_missing_parent" => res(libc::symlink(p("x").as_ptr(), p("pub/missing/s").as_ptr())),
            "symlink_in_readonly_dir" => res(libc::symlink(p("x").as_ptr(), p("ro/s").as_ptr())),
            // chmod(2), chown(2)
            "chmod_foreign" => res(libc::chmod(p("d/f").as_ptr(), 0o600)),
            "chmod_missing" => res(libc::chmod(p("d/missing").as_ptr(), 0o600)),
            "chown_foreign" => res(libc::chown(p("d/f").as_ptr(), USER, USER)),
            "chown_own_to_other" => res(libc::chown(p("pub/mine").as_ptr(), 0, 0)),
            "chmod_sgid_not_in_group" => {
                let r = libc::chmod(p("pub/mine2").as_ptr(), 0o2755);
                format!("{} mode {}", res(r), mode(&b.join("pub/mine2")))
            }
            // truncate(2)
            "truncate_dir" => res(libc::truncate(p("pub/empty").as_ptr(), 0)),
            "truncate_negative" => res(libc::truncate(p("pub/w").as_ptr(), -1)),
            "truncate_unwritable" => res(libc::truncate(p("d/f").as_ptr(), 0)),
            "truncate_missing" => res(libc::truncate(p("d/missing").as_ptr(), 0)),
            // mknod(2), mkfifo(3)
            "mknod_existing" => res(libc::mknod(p("pub/w").as_ptr(), libc::S_IFREG | 0o644, 0)),
            "mknod_char_device" => res(libc::mknod(p("pub/null").as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3))),
            "mkfifo_existing" => res(libc::mkfifo(p("pub/w").as_ptr(), 0o644)),
            other => panic!("no case {other}"),
        }
    }
}

const CASES: &[&str] = &[
    "creat_255",
    "creat_256",
    "open_256",
    "mkdir_256",
    "mknod_256",
    "mkfifo_256",
    "symlink_256",
    "link_256",
    "rename_to_256",
    "rename_from_256",
    "unlink_256",
    "rmdir_256",
    "chmod_256",
    "chown_256",
    "truncate_256",
    "stat_256",
    "path_4095",
    "path_4096",
    "open_w_suid_world_writable",
    "write_clears_suid",
    "truncate_clears_suid",
    "truncate_clears_sgid",
    "chown_clears_suid",
    "rename_foreign_dir_to_other_parent",
    "rename_foreign_dir_same_parent",
    "open_missing",
    "open_through_file",
    "open_excl_existing",
    "open_dir_for_writing",
    "open_root_only_file",
    "open_nofollow_symlink",
    "open_symlink_loop",
    "open_directory_on_file",
    "open_create_in_readonly_dir",
    "open_fifo_nonblocking_no_reader",
    "open_trunc_readonly_file",
    "mkdir_existing",
    "mkdir_missing_parent",
    "mkdir_under_file",
    "mkdir_in_readonly_dir",
    "mkdir_mode_umask",
    "rmdir_not_empty",
    "rmdir_file",
    "rmdir_dot",
    "rmdir_missing",
    "rmdir_in_readonly_dir",
    "rmdir_sticky_foreign",
    "unlink_dir",
    "unlink_missing",
    "unlink_in_readonly_dir",
    "unlink_sticky_foreign",
    "unlink_through_file",
    "rename_missing",
    "rename_file_onto_dir",
    "rename_dir_onto_file",
    "rename_dir_onto_nonempty",
    "rename_dir_into_itself",
    "rename_from_readonly_dir",
    "rename_sticky_foreign",
    "rename_noreplace_existing",
    "rename_exchange",
    "link_existing",
    "link_missing",
    "link_dir",
    "link_foreign_unwritable",
    "link_into_readonly_dir",
    "symlink_existing",
    "symlink_missing_parent",
    "symlink_in_readonly_dir",
    "chmod_foreign",
    "chmod_missing",
    "chown_foreign",
    "chown_own_to_other",
    "chmod_sgid_not_in_group",
    "truncate_dir",
    "truncate_negative",
    "truncate_unwritable",
    "truncate_missing",
    "mknod_existing",
    "mknod_char_device",
    "mkfifo_existing",
];

/// The fixture, made by root; `user` owns what the cases' user must own.
fn fixture(b: &Path, user: u32) {
    use std::fs;
    let mk = |rel: &str, m: u32| {
        fs::create_dir_all(b.join(rel)).unwrap();
        fs::set_permissions(b.join(rel), fs::Permissions::from_mode(m)).unwrap();
    };
    let file = |rel: &str, m: u32, body: &str| {
        fs::write(b.join(rel), body).unwrap();
        fs::set_permissions(b.join(rel), fs::Permissions::from_mode(m)).unwrap();
    };
    mk("", 0o755);
    mk("d", 0o755);
    file("d/f", 0o644, "root's");
    file("d/secret", 0o600, "root only");
    std::os::unix::fs::symlink("f", b.join("d/sl")).unwrap();
    std::os::unix::fs::symlink("loop", b.join("d/loop")).unwrap();
    nix::unistd::mkfifo(&b.join("d/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    mk("ro", 0o755);
    file("ro/f", 0o666, "");
    mk("ro/sub", 0o777);
    fs::set_permissions(b.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    mk("pub", 0o777);
    file("pub/w", 0o666, "anyone's");
    for f in ["suid", "suid2", "suid3", "suid4"] {
        file(&format!("pub/{f}"), 0o4777, "set-user-ID");
    }
    file("pub/sgid", 0o2777, "set-group-ID");
    mk("pub/rootdir", 0o755);
    mk("pub/rootdir2", 0o755);
    mk("pub/dst", 0o777);
    mk("pub/empty", 0o777);
    mk("pub/full", 0o777);
    file("pub/full/x", 0o666, "");
    for f in ["mv1", "mv2", "mv3", "mv4", "mv5"] {
        file(&format!("pub/{f}"), 0o666, f);
    }
    file("pub/xa", 0o666, "a");
    file("pub/xb", 0o666, "b");
    for d in ["pub/mvdir", "pub/mvdir2/y", "pub/mvdir3/sub"] {
        fs::create_dir_all(b.join(d)).unwrap();
    }
    for d in ["pub/mvdir", "pub/mvdir2", "pub/mvdir2/y", "pub/mvdir3", "pub/mvdir3/sub"] {
        std::os::unix::fs::chown(b.join(d), Some(user), Some(user)).unwrap();
    }
    file("pub/mine", 0o644, "");
    file("pub/mine2", 0o755, "");
    for f in ["pub/mine", "pub/mine2", "pub/suid4"] {
        std::os::unix::fs::chown(b.join(f), Some(user), Some(if f == "pub/mine2" { 0 } else { user })).unwrap();
    }
    mk("sticky", 0o1777);
    mk("sticky/rootdir", 0o755);
    file("sticky/rootfile", 0o666, "");
    file("sticky/rootfile2", 0o666, "");
}

#[test]
#[ignore = "helper: runs the cases as the user it was started as, started by pxfs_answers_as_ext4"]
fn posix_case_runner() {
    let base = PathBuf::from(std::env::var("SSI_POSIX_BASE").expect("SSI_POSIX_BASE"));
    // SAFETY: umask only sets the process's file mode mask.
    unsafe { libc::umask(0o022) };
    for case in CASES {
        println!("CASE\t{case}\t{}", run_case(case, &base));
    }
}

/// Runs every case under `base` as `uid` (the fixture made first); case → result.
fn run_as(exe: &Path, base: &Path, uid: u32) -> std::collections::BTreeMap<String, String> {
    fixture(base, uid);
    let out = std::process::Command::new(exe)
        .args(["--exact", "posix_case_runner", "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env("SSI_POSIX_BASE", base)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the case runner failed as uid {uid} in {}:\n{text}{}",
        base.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: std::collections::BTreeMap<String, String> = text
        .lines()
        // The first line may follow libtest's "test posix_case_runner ... ".
        .filter_map(|l| l.find("CASE\t").map(|i| &l[i + 5..]))
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(got.len(), CASES.len(), "every case answered:\n{text}");
    got
}

#[test]
fn pxfs_answers_as_ext4() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("posix", 2);
    let cfg = c.config();
    // /www lives on node 2: node 2 is its owner, node 1 another node.
    let targets = [
        ("ext4", c.dir.join("ext4")),
        ("pxfs-owner", cfg.node(2).unwrap().mountpoint.join("www/posix-owner")),
        ("pxfs-other", cfg.node(1).unwrap().mountpoint.join("www/posix-other")),
    ];
    let exe = ssi_testkit::UserExe::new("posix");
    std::fs::create_dir_all(&targets[0].1).unwrap();
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut differences = Vec::new();
    let mut compared = 0;
    for (who, uid) in [("root", 0), ("user", USER)] {
        let results: Vec<_> = targets.iter().map(|(name, dir)| (name, run_as(&exe.0, &dir.join(who), uid))).collect();
        let (_, ext4) = &results[0];
        for (name, got) in &results[1..] {
            for case in CASES {
                compared += 1;
                if got[*case] != ext4[*case] {
                    differences.push(format!("{case} as {who} on {name}: {} (ext4: {})", got[*case], ext4[*case]));
                }
            }
        }
    }
    eprintln!("{compared} answers compared ({} cases x root and user x owner and another node)", CASES.len());
    assert!(differences.is_empty(), "{} of {compared} answers differ from ext4:\n{}", differences.len(), differences.join("\n"));
}
