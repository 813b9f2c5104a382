//! PXFS between real node daemons, through their real FUSE mounts: one namespace on every
//! node, files on the owner's disk, coherence, cluster-wide locks, SQLite from two nodes,
//! fsync durability across a killed owner. Needs root and /dev/fuse (CI fails without).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ssi_testkit::{ok, required, Cluster};

fn mnt(c: &Cluster, node: u32) -> PathBuf {
    c.config().node(node).unwrap().mountpoint.clone()
}

fn disk(c: &Cluster, node: u32, vol: &str) -> PathBuf {
    c.dir.join(format!("node{node}/disk/{vol}"))
}

/// fcntl lock on the whole file: `Ok` when granted, the errno otherwise.
fn lock(f: &fs::File, typ: libc::c_short, wait: bool) -> Result<(), i32> {
    let fl = libc::flock { l_type: typ, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    // SAFETY: F_SETLK(W) reads one flock from fl, a live local; f is open.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), if wait { libc::F_SETLKW } else { libc::F_SETLK }, &fl) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

#[test]
fn one_namespace_files_on_their_owner_and_coherent_across_nodes() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-ns", 4);
    let (m1, m2, m3) = (mnt(&c, 1), mnt(&c, 2), mnt(&c, 3));
    // Every node sees the paper's namespace.
    for m in [&m1, &m2, &m3] {
        let mut names: Vec<String> = fs::read_dir(m).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert!(["db", "src", "www"].iter().all(|n| names.contains(&n.to_string())), "{names:?}");
    }
    // Written on node 1 into /www: lives on node 2's disk, read whole on node 3.
    let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    fs::write(m1.join("www/page.bin"), &body).unwrap();
    assert_eq!(fs::read(disk(&c, 2, "www").join("page.bin")).unwrap(), body, "the bytes are on the owner's disk");
    assert_eq!(fs::read(m3.join("www/page.bin")).unwrap(), body);
    assert_eq!(fs::metadata(m3.join("www/page.bin")).unwrap().len(), body.len() as u64);
    // A rename on node 1 is seen on node 2; across volumes it is EXDEV.
    fs::rename(m1.join("www/page.bin"), m1.join("www/renamed.bin")).unwrap();
    assert!(!m2.join("www/page.bin").exists());
    assert_eq!(fs::read(m2.join("www/renamed.bin")).unwrap().len(), body.len());
    assert_eq!(fs::rename(m1.join("www/renamed.bin"), m1.join("src/x.bin")).unwrap_err().raw_os_error(), Some(libc::EXDEV));
    // Names cached on node 1, present or absent, follow changes made on node 2 — also after
    // node 2 changed other names of the directory in between.
    assert!(!m1.join("www/later").exists());
    fs::write(m2.join("www/other"), b"x").unwrap();
    fs::write(m2.join("www/later"), b"here").unwrap();
    assert_eq!(fs::read(m1.join("www/later")).unwrap(), b"here", "an absent name made elsewhere");
    fs::write(m2.join("www/another"), b"").unwrap();
    fs::remove_file(m2.join("www/later")).unwrap();
    assert!(!m1.join("www/later").exists(), "a name removed elsewhere");
    // A directory node 1 made: node 1 answers lookups of absent names itself, until node 2
    // makes one.
    fs::create_dir(m1.join("www/made")).unwrap();
    assert!(!m1.join("www/made/theirs").exists());
    fs::write(m2.join("www/made/theirs"), b"2").unwrap();
    assert_eq!(fs::read(m1.join("www/made/theirs")).unwrap(), b"2", "a name made elsewhere in a directory made here");
    // Appended on node 1 while node 2 holds the file open: node 2's next read sees it.
    let mut held = fs::File::open(m2.join("www/renamed.bin")).unwrap();
    let mut a = OpenOptions::new().append(true).open(m1.join("www/renamed.bin")).unwrap();
    a.write_all(b"TAIL").unwrap();
    drop(a);
    let mut tail = [0u8; 4];
    held.seek(SeekFrom::Start(body.len() as u64)).unwrap();
    held.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"TAIL");
    let mut again = Vec::new();
    fs::File::open(m2.join("www/renamed.bin")).unwrap().read_to_end(&mut again).unwrap();
    assert_eq!(again.len(), body.len() + 4);
    // 1,000 rounds: written and closed on node 1, read on node 3 — never stale.
    let p1 = m1.join("db/round.txt");
    let p3 = m3.join("db/round.txt");
    for i in 0..1000 {
        let text = format!("round {i} {}", "x".repeat(i % 97));
        fs::write(&p1, &text).unwrap();
        assert_eq!(fs::read_to_string(&p3).unwrap(), text, "stale read in round {i}");
    }
    // Node 3 keeps its pages of an unchanged file across opens; a rewrite of the same size
    // elsewhere (same length, new bytes) must still be seen at its next open.
    for i in 0..300 {
        let text = format!("{i:08}");
        fs::write(&p1, &text).unwrap();
        assert_eq!(fs::read_to_string(&p3).unwrap(), text, "stale read in same-size round {i}");
        assert_eq!(fs::read_to_string(&p3).unwrap(), text, "stale read, reopened, in same-size round {i}");
    }
    // Directories, symlinks, hard links, xattrs, truncate, statfs.
    fs::create_dir_all(m2.join("src/a/b")).unwrap();
    fs::write(m2.join("src/a/b/f"), b"12345").unwrap();
    std::os::unix::fs::symlink("b/f", m1.join("src/a/link")).unwrap();
    assert_eq!(fs::read_link(m3.join("src/a/link")).unwrap(), Path::new("b/f"));
    assert_eq!(fs::read(m3.join("src/a/link")).unwrap(), b"12345");
    fs::hard_link(m1.join("src/a/b/f"), m1.join("src/a/hard")).unwrap();
    assert_eq!(fs::metadata(m2.join("src/a/b/f")).unwrap().nlink(), 2);
    OpenOptions::new().write(true).open(m3.join("src/a/hard")).unwrap().set_len(2).unwrap();
    assert_eq!(fs::read(m1.join("src/a/b/f")).unwrap(), b"12");
    assert!(OpenOptions::new().write(true).create_new(true).open(m2.join("src/a/b/f")).is_err(), "O_EXCL on an existing file");
    let st = nix::sys::statvfs::statvfs(&m2.join("src")).unwrap();
    assert!(st.blocks() > 0);
    let r = Command::new("setfattr").args(["-n", "user.k", "-v", "v1"]).arg(m1.join("src/a/b/f")).status();
    if r.is_ok_and(|s| s.success()) {
        let out = Command::new("getfattr").args(["--only-values", "-n", "user.k"]).arg(m3.join("src/a/b/f")).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v1");
    }
    assert_eq!(fs::remove_dir(m1.join("www")).unwrap_err().raw_os_error(), Some(libc::EBUSY), "a volume's mount point stays");
    fs::remove_dir_all(m3.join("src/a")).unwrap();
    assert!(!disk(&c, 3, "src").join("a").exists());
}

use std::os::unix::fs::MetadataExt;

/// Run as a child by `locks_are_cluster_wide`: takes a write lock and waits to be killed.
#[test]
#[ignore = "helper: started by the lock tests, killed with SIGKILL"]
fn lock_holder_child() {
    let p = std::env::var("SSI_TEST_LOCKFILE").unwrap();
    let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
    lock(&f, libc::F_WRLCK as i16, false).unwrap();
    println!("locked");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn locks_are_cluster_wide() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-locks", 3);
    let (m1, m2) = (mnt(&c, 1), mnt(&c, 2));
    fs::write(m1.join("db/lockfile"), b"").unwrap();
    let a = OpenOptions::new().read(true).write(true).open(m1.join("db/lockfile")).unwrap();
    let b = OpenOptions::new().read(true).write(true).open(m2.join("db/lockfile")).unwrap();
    lock(&a, libc::F_WRLCK as i16, false).unwrap();
    assert_eq!(lock(&b, libc::F_WRLCK as i16, false), Err(libc::EAGAIN), "held on node 1: refused on node 2");
    assert_eq!(lock(&b, libc::F_RDLCK as i16, false), Err(libc::EAGAIN));
    // F_GETLK on node 2 names the holder's range.
    let mut fl = libc::flock { l_type: libc::F_WRLCK as i16, l_whence: 0, l_start: 0, l_len: 0, l_pid: 0 };
    // SAFETY: F_GETLK writes one flock into fl, a live local; b is open.
    assert_eq!(unsafe { libc::fcntl(b.as_raw_fd(), libc::F_GETLK, &mut fl) }, 0);
    assert_eq!(fl.l_type, libc::F_WRLCK as i16);
    // A blocking request on node 2 is granted when node 1 lets go.
    let t0 = Instant::now();
    let waiter = std::thread::spawn(move || {
        lock(&b, libc::F_WRLCK as i16, true).unwrap();
        Instant::now()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the waiter must wait");
    let released = Instant::now();
    lock(&a, libc::F_UNLCK as i16, false).unwrap();
    let got = waiter.join().unwrap();
    assert!(got >= released && got - released < Duration::from_secs(2), "granted {:?} after release", got.duration_since(t0));

    // A holder killed with SIGKILL loses its lock.
    fs::write(m1.join("db/lock2"), b"").unwrap();
    let mut child = spawn_lock_holder(&m1.join("db/lock2"));
    let f2 = OpenOptions::new().read(true).write(true).open(m2.join("db/lock2")).unwrap();
    assert_eq!(lock(&f2, libc::F_WRLCK as i16, false), Err(libc::EAGAIN));
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while lock(&f2, libc::F_WRLCK as i16, false).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "the killed holder's lock was not released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `lock_holder_child` on `file`, once it holds the lock.
fn spawn_lock_holder(file: &Path) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_holder_child", "--include-ignored", "--nocapture"])
        .env("SSI_TEST_LOCKFILE", file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let t = Instant::now();
    let mut seen = String::new();
    while !seen.contains("locked") {
        let n = out.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(n > 0 && t.elapsed() < Duration::from_secs(20), "child never locked: {seen}");
    }
    child
}

/// A node alone with a file buffers its writes and arbitrates its locks itself (the
/// exclusive token); the moment another node looks, the owner recalls: the writes are there
/// and the locks hold across nodes.
#[test]
fn exclusive_tokens_hand_over_writes_and_locks() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-excl", 3);
    let owner = c.config().volumes.iter().find(|v| v.path == "/db").unwrap().node;
    // "Node 1" and "node 2" below: two nodes other than the owner (whose own opens go to
    // its disk through passthrough).
    let others: Vec<u32> = (1..=3).filter(|n| *n != owner).collect();
    let (m1, m2) = (mnt(&c, others[0]), mnt(&c, others[1]));
    let on_disk = disk(&c, owner, "db").join("solo");
    // Written on node 1, neither closed nor synced: buffered on node 1 (not on the owner's
    // disk yet); node 2 sees size and bytes.
    let mut a = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m1.join("db/solo")).unwrap();
    a.write_all(b"written on node 1, still open").unwrap();
    lock(&a, libc::F_WRLCK as i16, false).unwrap();
    assert_eq!(fs::metadata(&on_disk).unwrap().len(), 0, "node 1 holds the token and buffers");
    assert_eq!(fs::metadata(m2.join("db/solo")).unwrap().len(), 29, "the recall wrote back");
    assert_eq!(fs::metadata(&on_disk).unwrap().len(), 29);
    assert_eq!(fs::read(m2.join("db/solo")).unwrap(), b"written on node 1, still open");
    // The lock node 1 took by itself is the owner's now: node 2 is refused, then waits.
    let b = OpenOptions::new().read(true).write(true).open(m2.join("db/solo")).unwrap();
    assert_eq!(lock(&b, libc::F_WRLCK as i16, false), Err(libc::EAGAIN), "node 1's lock moved to the owner");
    let waiter = std::thread::spawn(move || lock(&b, libc::F_WRLCK as i16, true));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished());
    lock(&a, libc::F_UNLCK as i16, false).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(()));
    // Two processes on one node: the holder arbitrates; a waiter hands the token back and
    // waits at the owner, and gets the lock when the holding process dies.
    fs::write(m1.join("db/local"), b"").unwrap();
    let mut child = spawn_lock_holder(&m1.join("db/local"));
    let f = OpenOptions::new().read(true).write(true).open(m1.join("db/local")).unwrap();
    assert_eq!(lock(&f, libc::F_WRLCK as i16, false), Err(libc::EAGAIN), "held by the other process");
    let waiter = std::thread::spawn(move || lock(&f, libc::F_WRLCK as i16, true));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(()));
    // Node 2 opening the file recalls nothing stale: the data written back at close is whole.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m1.join("db/big"), &big).unwrap();
    assert_eq!(fs::read(m2.join("db/big")).unwrap(), big);
}

#[test]
fn sqlite_from_two_nodes_at_once() {
    if !ssi_testkit::root_and_fuse() || !required("sqlite3", Command::new("sqlite3").arg("-version").output().is_ok()) {
        return;
    }
    let c = Cluster::up("pxfs-sqlite", 4);
    let (m1, m2) = (mnt(&c, 1), mnt(&c, 2));
    let db1 = m1.join("db/bank.db");
    assert!(Command::new("sqlite3").arg(&db1).arg("CREATE TABLE c(n INTEGER); INSERT INTO c VALUES(0);").status().unwrap().success());
    const N: usize = 200;
    let script: String = (0..N).map(|_| "BEGIN IMMEDIATE; UPDATE c SET n=n+1; COMMIT;\n").collect();
    let run = |db: PathBuf, script: String| {
        std::thread::spawn(move || {
            let mut ch = Command::new("sqlite3")
                .args(["-bail", "-cmd", ".timeout 60000"])
                .arg(db)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            ch.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
            ch.wait().unwrap().success()
        })
    };
    let t1 = run(db1.clone(), script.clone());
    let t2 = run(m2.join("db/bank.db"), script);
    assert!(t1.join().unwrap() && t2.join().unwrap(), "every transaction committed");
    let out = Command::new("sqlite3").arg(m2.join("db/bank.db")).arg("SELECT n FROM c; PRAGMA integrity_check;").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\nok\n", 2 * N));
}

#[test]
fn fsynced_data_survives_a_killed_owner_and_outages_fail_fast() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-durable", 4);
    let m1 = mnt(&c, 1);
    let mut f = fs::File::create(m1.join("db/ledger")).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    c.kill9(4);
    // With /db's owner down, operations on it fail quickly with an I/O error, not a hang.
    let t = Instant::now();
    let e = fs::read(m1.join("db/ledger")).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOTCONN)), "{e}");
    // Other volumes are unaffected.
    fs::write(m1.join("www/alive"), b"yes").unwrap();
    // The owner returns: the fsync'd bytes are there, read through another node.
    ok(&["up", "--dir", c.dir_str()]);
    let t = Instant::now();
    loop {
        match fs::read(mnt(&c, 2).join("db/ledger")) {
            Ok(d) => {
                assert_eq!(d, data);
                break;
            }
            Err(e) => assert!(t.elapsed() < Duration::from_secs(10), "not readable after restart: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fs::read(m1.join("db/ledger")).unwrap(), data, "the node that wrote it reads it again too");
}

#[test]
fn permissions_are_the_callers_on_every_node() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-perm", 2);
    let (m1, m2) = (mnt(&c, 1), mnt(&c, 2));
    fs::create_dir(m1.join("www/pub")).unwrap();
    fs::set_permissions(m1.join("www/pub"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let as_nobody = |cmd: &str| Command::new("sh").arg("-c").arg(cmd).uid(65534).gid(65534).status().unwrap().success();
    use std::os::unix::process::CommandExt;
    assert!(!as_nobody(&format!("touch {}/x", m2.display())), "uid 65534 may not write a root-owned directory");
    assert!(as_nobody(&format!("echo mine > {}/www/pub/n && chmod 600 {}/www/pub/n", m2.display(), m1.display())));
    let md = fs::metadata(disk(&c, 2, "www").join("pub/n")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534), "created as the caller on the owner's disk");
    fs::set_permissions(m1.join("www/pub/n"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m1.join("www/pub/n"), Some(0), Some(0)).unwrap();
    assert!(!as_nobody(&format!("cat {}/www/pub/n", m2.display())), "a root-only file stays root-only from another node");
}

/// What `/www`'s server keeps for the nodes, from `ssi status --json`.
fn www_state(c: &Cluster) -> serde_json::Value {
    let s: serde_json::Value = serde_json::from_str(&ok(&["status", "--json", "--dir", c.dir_str()])).unwrap();
    let v = s["volumes"].as_array().unwrap().iter().find(|v| v["path"] == "/www").unwrap().clone();
    assert_eq!(v["reachable"], true, "{s}");
    v
}

#[test]
fn removed_files_leave_no_state_on_their_server() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-forget", 2);
    let (m1, m2) = (mnt(&c, 1), mnt(&c, 2));
    let before = www_state(&c)["cached_files"].as_u64().unwrap();
    // 300 files of node 2's volume made and written on node 1, every other one also read on
    // node 2 (whose open takes node 1's token), then removed on node 1.
    let dir = m1.join("www/many");
    fs::create_dir(&dir).unwrap();
    for i in 0..300 {
        fs::write(dir.join(format!("f{i}")), b"x").unwrap();
        if i % 2 == 0 {
            assert_eq!(fs::read(m2.join(format!("www/many/f{i}"))).unwrap(), b"x");
        }
    }
    let during = www_state(&c);
    assert!(during["cached_files"].as_u64().unwrap() >= before + 300, "the files are cached: {during}");
    for i in 0..300 {
        fs::remove_file(dir.join(format!("f{i}"))).unwrap();
    }
    // 50 files replaced by a rename over them, then the renamed ones removed.
    for i in 0..50 {
        fs::write(dir.join(format!("old{i}")), b"old").unwrap();
        fs::write(dir.join(format!("new{i}")), b"new").unwrap();
        fs::rename(dir.join(format!("new{i}")), dir.join(format!("old{i}"))).unwrap();
        assert_eq!(fs::read(m2.join(format!("www/many/old{i}"))).unwrap(), b"new");
        fs::remove_file(dir.join(format!("old{i}"))).unwrap();
    }
    // A file removed while open stays the server's until its last close.
    let kept = m1.join("www/kept");
    let mut f = fs::File::create(&kept).unwrap();
    fs::remove_file(&kept).unwrap();
    f.write_all(b"still here").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap().read_to_string(&mut back).unwrap();
    assert_eq!(back, "still here");
    let open = www_state(&c);
    assert!(open["open_files"].as_u64().unwrap() >= 1, "{open}");
    drop(f);
    fs::remove_dir(&dir).unwrap();
    // The release is one-way: give it a moment.
    let t0 = Instant::now();
    loop {
        let after = www_state(&c);
        let (cached, named, opened) =
            (after["cached_files"].as_u64().unwrap(), after["named_dirs"].as_u64().unwrap(), after["open_files"].as_u64().unwrap());
        // The volume's root (cached and named) may stay; nothing of the 401 removed files.
        if cached <= before + 1 && named <= 1 && opened == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "removed files left state behind: {after} (before: {before} cached)");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_departed_node_leaves_no_tokens_on_the_servers() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    let c = Cluster::up("pxfs-departed", 3);
    let (m1, m3) = (mnt(&c, 1), mnt(&c, 3));
    // Node 3's cache tokens on node 2's volume. (Node 1 may keep tokens on the files it
    // made: its release is asynchronous, and a reader's open does not call back a cache
    // of a file still open elsewhere.)
    let node3 = |c: &Cluster| www_state(c)["cached_by_node"]["3"].as_u64().unwrap_or(0);
    // 100 files of node 2's volume, made on node 1 and read on node 3.
    fs::create_dir(m1.join("www/seen")).unwrap();
    for i in 0..100 {
        fs::write(m1.join(format!("www/seen/f{i}")), b"x").unwrap();
        assert_eq!(fs::read(m3.join(format!("www/seen/f{i}"))).unwrap(), b"x");
    }
    let during = node3(&c);
    assert!(during >= 100, "node 3 caches the 100 files it read: {}", www_state(&c));
    c.kill9(3);
    let t0 = Instant::now();
    while node3(&c) > 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "node 3's tokens stayed: {}", www_state(&c));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_files_inode_number_is_the_same_on_every_node_and_stays() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let c = Cluster::up("pxfs-ino", 3);
    let (m1, m2, m3) = (mnt(&c, 1), mnt(&c, 2), mnt(&c, 3));
    fs::create_dir(m1.join("www/t")).unwrap();
    fs::write(m1.join("www/t/a"), "a").unwrap();
    fs::hard_link(m1.join("www/t/a"), m1.join("www/t/b")).unwrap();
    fs::write(m1.join("www/t/c"), "c").unwrap();
    fs::write(m1.join("src/c"), "c on another volume").unwrap();
    let ino = |p: PathBuf| fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).ino();
    let a = ino(m1.join("www/t/a"));
    for m in [&m1, &m2, &m3] {
        assert_eq!(ino(m.join("www/t/a")), a, "one number on every node");
        assert_eq!(ino(m.join("www/t/b")), a, "a hard link shares it");
        assert_ne!(ino(m.join("www/t/c")), a);
        assert_ne!(ino(m.join("src/c")), ino(m.join("www/t/c")), "distinct between volumes");
    }
    // The same after every node's kernel forgot the inodes.
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    for m in [&m1, &m2, &m3] {
        assert_eq!(ino(m.join("www/t/b")), a, "unchanged once the kernel forgot it");
    }
    // readdir's d_ino agrees with stat.
    for e in fs::read_dir(m2.join("www/t")).unwrap() {
        let e = e.unwrap();
        assert_eq!(std::os::unix::fs::DirEntryExt::ino(&e), ino(e.path()), "{:?}", e.file_name());
    }
    // A tree with hard links archived through node 3 and extracted through node 2 keeps them.
    let tarball = c.dir.join("t.tar");
    let tar = |args: &[&str]| assert!(Command::new("tar").args(args).status().unwrap().success(), "tar {args:?}");
    tar(&["-C", m3.join("www").to_str().unwrap(), "-cf", tarball.to_str().unwrap(), "t"]);
    fs::create_dir(m2.join("www/x")).unwrap();
    tar(&["-C", m2.join("www/x").to_str().unwrap(), "-xf", tarball.to_str().unwrap()]);
    let (xa, xb) = (fs::metadata(m1.join("www/x/t/a")).unwrap(), fs::metadata(m1.join("www/x/t/b")).unwrap());
    assert_eq!((xa.ino(), xa.nlink()), (xb.ino(), 2), "extracted as one file with two names");
    assert_ne!(xa.ino(), a);
}

#[test]
fn names_are_bytes_any_but_slash_and_nul() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let c = Cluster::up("pxfs-bytes", 2);
    let (m1, m2) = (mnt(&c, 1), mnt(&c, 2));
    // Every byte from 0x80 to 0xFF, in names of up to 255 bytes: no UTF-8 among them.
    let raw: Vec<u8> = (0x80..=0xffu8).collect();
    let name = OsStr::from_bytes(&raw[..100]);
    let target = OsStr::from_bytes(&raw[100..]);
    fs::create_dir(m1.join("www/b")).unwrap();
    fs::write(m1.join("www/b").join(name), "latin-1 and worse").unwrap();
    fs::write(m1.join("www/b").join(target), "the target").unwrap();
    std::os::unix::fs::symlink(target, m1.join("www/b/link")).unwrap();
    fs::create_dir(m1.join("www/b").join(OsStr::from_bytes(b"dir\xff"))).unwrap();
    // Listed, read and removed on another node; on the owner's disk the same bytes.
    let mut listed: Vec<Vec<u8>> = fs::read_dir(m2.join("www/b")).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
    listed.sort();
    let mut want = vec![raw[..100].to_vec(), raw[100..].to_vec(), b"link".to_vec(), b"dir\xff".to_vec()];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(fs::read_to_string(m2.join("www/b").join(name)).unwrap(), "latin-1 and worse");
    assert_eq!(fs::read_link(m2.join("www/b/link")).unwrap().as_os_str().as_bytes(), &raw[100..]);
    assert_eq!(fs::read_to_string(m2.join("www/b/link")).unwrap(), "the target", "followed on the other node");
    assert!(disk(&c, 2, "www").join("b").join(name).exists(), "the same bytes on the owner's disk");
    fs::rename(m2.join("www/b").join(name), m2.join("www/b").join(OsStr::from_bytes(b"renamed\x80"))).unwrap();
    assert!(m1.join("www/b").join(OsStr::from_bytes(b"renamed\x80")).exists());
    for n in [&b"renamed\x80"[..], &raw[100..], b"link"] {
        fs::remove_file(m2.join("www/b").join(OsStr::from_bytes(n))).unwrap();
    }
    fs::remove_dir(m2.join("www/b").join(OsStr::from_bytes(b"dir\xff"))).unwrap();
    assert_eq!(fs::read_dir(m1.join("www/b")).unwrap().count(), 0);
}

#[test]
fn what_the_owner_writes_through_passthrough_another_node_reads_at_once() {
    if !ssi_testkit::root_and_fuse() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let c = Cluster::up("pxfs-passthrough", 2);
    // /www is node 2's volume: node 2's opens of its files are backed by its disk.
    let (m1, m2) = (mnt(&c, 1), mnt(&c, 2));
    let log = fs::read_to_string(c.dir.join("node2/log")).unwrap_or_default();
    assert!(log.contains("FUSE passthrough on"), "the owner's mount has passthrough: {log}");
    fs::create_dir(m2.join("www/pt")).unwrap();
    fs::write(m2.join("www/pt/f"), b"one.").unwrap();
    // Node 1 opens the file and reads it into its page cache.
    let other = OpenOptions::new().read(true).write(true).open(m1.join("www/pt/f")).unwrap();
    let read = |at: u64| {
        let mut b = [0u8; 4];
        other.read_exact_at(&mut b, at).unwrap();
        b
    };
    assert_eq!(&read(0), b"one.");
    // The owner writes through passthrough: node 1's open file reads it at once.
    let owner = OpenOptions::new().read(true).write(true).open(m2.join("www/pt/f")).unwrap();
    let requests = FuseRequests::of_this_thread();
    owner.write_all_at(b"two.", 0).unwrap();
    owner.sync_data().unwrap();
    let sent = requests.sent();
    assert!(!sent.iter().any(|r| r == "FUSE_WRITE" || r == "FUSE_READ"), "the owner's write went to its daemon: {sent:?}");
    assert!(sent.iter().any(|r| r == "FUSE_FSYNC"), "the tracepoint saw this thread's requests: {sent:?}");
    for (i, word) in [b"two.", b"thr.", b"fou."].iter().enumerate() {
        owner.write_all_at(*word, 0).unwrap();
        assert_eq!(&read(0), *word, "round {i}");
    }
    // And through a shared mapping, after msync.
    // SAFETY: a fresh 4-byte shared mapping of an open file of 4 bytes, unmapped below.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), 4, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, owner.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(b"map.".as_ptr(), p.cast::<u8>(), 4);
        assert_eq!(libc::msync(p, 4, libc::MS_SYNC), 0);
        libc::munmap(p, 4);
    }
    assert_eq!(&read(0), b"map.");
    // A new open elsewhere sees it too, and what node 1 writes the owner reads.
    assert_eq!(fs::read(m1.join("www/pt/f")).unwrap(), b"map.");
    other.write_all_at(b"one!", 0).unwrap();
    let mut b = [0u8; 4];
    owner.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"one!");
    // The size, too, is everyone's at once.
    owner.write_all_at(b"more", 4).unwrap();
    assert_eq!(fs::metadata(m1.join("www/pt/f")).unwrap().len(), 8);
    assert_eq!(&read(4), b"more");
    drop(owner);
    assert_eq!(fs::read(m1.join("www/pt/f")).unwrap(), b"one!more");
}

/// The FUSE requests this thread's system calls send, from the kernel's `fuse_request_send`
/// tracepoint in a trace instance of its own (other tests' requests are not seen).
struct FuseRequests(PathBuf);

impl FuseRequests {
    fn of_this_thread() -> FuseRequests {
        let dir = PathBuf::from(format!("/sys/kernel/tracing/instances/ssi-test-{}", std::process::id()));
        let _ = fs::create_dir(&dir);
        let event = dir.join("events/fuse/fuse_request_send");
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        fs::write(event.join("filter"), format!("common_pid == {tid}")).unwrap();
        fs::write(event.join("enable"), "1").unwrap();
        FuseRequests(dir)
    }

    /// The requests' opcode names, in order.
    fn sent(&self) -> Vec<String> {
        fs::write(self.0.join("events/fuse/fuse_request_send/enable"), "0").unwrap();
        let trace = fs::read_to_string(self.0.join("trace")).unwrap();
        trace.split('(').skip(1).filter_map(|t| t.split(')').next()).filter(|op| op.starts_with("FUSE_")).map(String::from).collect()
    }
}

impl Drop for FuseRequests {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}
