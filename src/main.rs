//! `ssi`: the single-system-image tool and node daemon (see README.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use ssi_node::local::{self, UpOptions, UpOutcome};

#[derive(Parser)]
#[command(name = "ssi", version, about = "Make a set of Linux machines look like one")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster; returns when all nodes are members.
    Up {
        #[arg(long, default_value_t = 4)]
        nodes: u32,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Each node in its own network namespace on a bridge, plus an `ext` namespace that
        /// reaches the cluster only through the gateway (node 2): the paper's web setup.
        #[arg(long)]
        netns: bool,
        /// With --netns: how the gateway steers connections for the global address to the
        /// listening nodes: auto (the best that works), ebpf (TC program, direct server
        /// return), nft (nftables DNAT), proxy (user-space forwarder).
        #[arg(long, default_value = "auto", requires = "netns")]
        dispatch: ssi_netsap::dispatch::Mode,
        /// Use this cluster config instead of generating one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop the local cluster, unmount, remove sockets.
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A power cut of node N: every process of the node killed at once, its FUSE mount
    /// aborted. `ssi up` starts it again as a new incarnation.
    Crash {
        node: u32,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Cut a --netns cluster's interconnect between two groups of nodes: `1,2 / 3,4,5`, or
    /// one group against the rest (`3`). Replaces an earlier cut.
    Partition {
        #[arg(required = true, num_args = 1..)]
        groups: Vec<String>,
        /// Drop only what the first group sends to the second.
        #[arg(long)]
        oneway: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The cluster's quorum: which nodes vote.
    Cluster {
        #[command(subcommand)]
        op: ClusterOp,
    },
    /// Take away the cut `ssi partition` made.
    Heal {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Members, view number, addresses, uptime.
    Status {
        #[arg(long)]
        json: bool,
        /// Ask this node (default: the first that answers).
        #[arg(short = 'n', long)]
        node: Option<u32>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One node's daemon, in the foreground.
    Node {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        id: u32,
        /// Also start these servants (`bench`: the ORB benchmark's; for `ssi bench`).
        #[arg(long = "with", value_name = "NAME")]
        with: Vec<String>,
    },
    /// Print node N's mountpoint.
    Mnt {
        node: u32,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Side-by-side benchmarks against baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// The main job: a 4-node local cluster in network namespaces, a tour of what it does,
    /// the paper's make, web and database workloads traced beside the paper's figures (one
    /// HTML report), then down. Needs root.
    Demo {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The paper-length runs (web and database 241 and 243 s) instead of short ones.
        #[arg(long)]
        full: bool,
    },
    /// Run a command on a node of the cluster, as if here: stdio, signals, exit status.
    Rexec {
        /// The node to run on; several (`-n 1,2,3`) run the command on each at once.
        #[arg(short = 'n', long = "node", value_delimiter = ',', conflicts_with_all = ["any", "all"])]
        nodes: Vec<u32>,
        /// Run the command on every node of the cluster at once.
        #[arg(long, conflicts_with = "any")]
        all: bool,
        /// Let the placement policy pick the node (the default without -n).
        #[arg(long)]
        any: bool,
        /// On several nodes: each output line as it comes, prefixed with its node ("3: ...");
        /// without it, each node's output whole, in node order, when all have ended.
        #[arg(long)]
        prefix: bool,
        /// A pseudo-terminal for interactive commands.
        #[arg(short = 't', conflicts_with_all = ["all", "prefix"])]
        tty: bool,
        #[command(flatten)]
        what: RemoteCmd,
    },
    /// Run a program under bind interposition: each bind() it makes is checked with the
    /// cluster's SAP server (EADDRINUSE when another node holds the port). With --service,
    /// it listens as part of a scalable service several nodes may share.
    Run {
        #[arg(short = 'n', long)]
        node: Option<u32>,
        /// Join (or create) this scalable service on the ports it binds.
        #[arg(long)]
        service: Option<String>,
        /// The service's load-balancing policy.
        #[arg(long, default_value = "rr", requires = "service")]
        policy: String,
        /// This listener's share under --policy weighted.
        #[arg(long, default_value_t = 1, requires = "service")]
        weight: u32,
        #[command(flatten)]
        what: RemoteCmd,
    },
    /// sh-compatible entry for make's SHELL: `ssi sh -c CMD` runs on the node the placement
    /// policy picks.
    Sh {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Processes of the cluster, from the global /proc (`-ef`: all, full format).
    Ps {
        /// Every process (default: the caller's).
        #[arg(short = 'e')]
        all: bool,
        /// Full format: UID PID PPID NODE C STIME TTY TIME CMD.
        #[arg(short = 'f')]
        full: bool,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Signal global pids: `ssi kill [-SIGNAL] GPID...` (as your own kill(2) on their nodes).
    Kill {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The SAP table: the cluster's ports and who listens on them.
    Ports {
        #[arg(long, global = true)]
        json: bool,
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        op: Option<PortsCmd>,
    },
    /// Run a command in the external namespace of a `--netns` cluster: a client outside the
    /// cluster that reaches it only through the gateway's global address.
    Ext {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The command: `ssi ext -- curl http://192.168.77.1/`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Record and report communication traces (the Solaris MC study on this cluster).
    Trace {
        #[command(subcommand)]
        which: TraceCmd,
    },
    /// The paper's workloads on a running cluster.
    Workload {
        #[command(subcommand)]
        which: WorkloadCmd,
    },
}

/// A command for another node: where it runs from, and what.
#[derive(clap::Args)]
struct RemoteCmd {
    /// Working directory on the target (default: this one, moved to the target's mount).
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    cmd: Vec<std::ffi::OsString>,
}

/// Which port, through which node, for which process.
#[derive(clap::Args)]
struct PortArgs {
    port: u32,
    #[arg(long)]
    udp: bool,
    /// Through this node (default: the first running one).
    #[arg(long, short = 'n')]
    node: Option<u32>,
    /// The holder's pid on that node (default 0: the node itself).
    #[arg(long, default_value_t = 0)]
    pid: u32,
}

/// What every workload takes: where the cluster is, how to report, whether to trace.
#[derive(clap::Args)]
struct WorkloadRun {
    #[arg(long)]
    json: bool,
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Record the run with `ssi trace record` into this directory and print its report
    /// (root).
    #[arg(long)]
    trace: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PortsCmd {
    /// Take a port in the cluster's namespace (root); exits 98 when another node holds it.
    Bind {
        #[command(flatten)]
        at: PortArgs,
        /// A scalable service others may join on the same port.
        #[arg(long)]
        service: Option<String>,
        #[arg(long, default_value = "rr")]
        policy: String,
    },
    /// Give a port back (root).
    Release {
        #[command(flatten)]
        at: PortArgs,
    },
}

#[derive(Subcommand)]
enum TraceCmd {
    /// Record the running local cluster's ORB traffic (root only): eBPF on the daemons'
    /// probes and the transport's syscalls, or in-process when eBPF cannot be used.
    Record {
        /// The trace directory to write.
        #[arg(short = 'o', long, default_value = "ssi-trace")]
        out: PathBuf,
        /// Stop after this many seconds (default: when the command exits, or on Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Record in-process (through the daemons) even when eBPF is available.
        #[arg(long)]
        in_process: bool,
        /// Also attach the transport's syscall tracepoints, for iovec counts per syscall. It
        /// costs every task on the machine (the kernel's slow syscall path: ≈ +17% on the
        /// ORB's two-way latency here), so it is off by default.
        #[arg(long)]
        syscalls: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The command to trace: `ssi trace record -- CMD ARGS...`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// The study's tables and figures for a trace, beside the paper's.
    Report {
        trace: PathBuf,
        /// Also write one self-contained HTML page with the plots.
        #[arg(long)]
        html: Option<PathBuf>,
        /// The figures as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Request-response timelines in the Chrome trace / Perfetto JSON format.
    Export {
        trace: PathBuf,
        #[arg(short = 'o', long, default_value = "trace-perfetto.json")]
        out: PathBuf,
        /// At most this many requests (the first complete ones).
        #[arg(long, default_value_t = 2000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// What recording costs the ORB: no recorder vs eBPF vs in-process, same run.
    Trace {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Seconds per case per round.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// The ORB against raw TCP and plain tonic, on a 2-node local cluster.
    Orb {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per case per round.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        #[arg(long, value_delimiter = ',', default_value = "128,4096")]
        payloads: Vec<u32>,
        #[arg(long, default_value_t = 256)]
        inflight: u32,
        /// Record the whole run with `ssi trace record` into this directory (root), and
        /// check the trace against the ORB's counters.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// The IN coprocessor's Fig. 4(a): for 2..N QEs the highest call rate at which all, 97%
    /// and 95% of the calls meet the 100 ms deadline; the paper's 20,000 calls/s beside it.
    In {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 6)]
        max_qes: u32,
        /// Seconds of calls per probe.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long, default_value_t = 100_000.0)]
        start_rate: f64,
        #[arg(long, default_value_t = 4_000_000.0)]
        max_rate: f64,
        /// Write the Fig. 4(a) plot (SVG) here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// The gateway's dispatcher on a 4-node --netns cluster, wrk from ext: nginx on node 3 at
    /// its own address (routed; the baseline) and through the gateway, nginx on 3 nodes as one
    /// service, nginx on the gateway itself.
    Net {
        #[arg(long)]
        json: bool,
        /// Rounds over all cases, interleaved; each figure is the median of its rounds.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// wrk's open connections.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// The dispatcher to measure: auto, ebpf, nft, proxy.
        #[arg(long, default_value = "auto")]
        dispatch: ssi_netsap::dispatch::Mode,
    },
    /// PXFS against the local disk and sshfs: metadata rates, throughput, fsync, SQLite.
    Fs {
        #[arg(long)]
        json: bool,
        /// Rounds over all cases, interleaved; each figure is the median of its rounds.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per timed metric.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Size of the sequential/random-read file, MiB.
        #[arg(long, default_value_t = 256)]
        file_mib: u64,
        /// Keep the files on the temp directory's file system, not on a fresh ext4 made
        /// for the run on a loop device.
        #[arg(long)]
        on_temp_dir: bool,
    },
    /// Remote exec against local `sh -c` and ssh; a parallel build over the cluster against
    /// a local one.
    Rexec {
        #[arg(long)]
        json: bool,
        /// Runs of each command for the latency figures.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// The source tarball to build (default: scripts/fetch-redis.sh's redis 7.0.15).
        #[arg(long, conflicts_with = "no_build")]
        tree: Option<PathBuf>,
        /// Latency only.
        #[arg(long)]
        no_build: bool,
        #[arg(long, default_value_t = 8)]
        jobs: u32,
    },
}

#[derive(Subcommand)]
enum WorkloadCmd {
    /// Debit/credit transactions from every node against one SQLite database on /db.
    Db {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 4)]
        branches: u32,
        #[arg(long, default_value_t = 10_000)]
        accounts: u32,
        /// PostgreSQL instead: data directory on PXFS /db, then on the local disk; pgbench.
        #[arg(long)]
        pgbench: bool,
        /// pgbench's scale factor (with --pgbench).
        #[arg(long, default_value_t = 2)]
        pg_scale: u32,
        /// pgbench's clients (with --pgbench).
        #[arg(long, default_value_t = 4)]
        pg_clients: u32,
        #[command(flatten)]
        run: WorkloadRun,
    },
    /// One client of `db` (started on each node by `ssi workload db`).
    #[command(hide = true)]
    DbClient {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        node: u32,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        branches: u32,
        #[arg(long)]
        accounts: u32,
    },
    /// The redis tree built on /src with make -jN SHELL='ssi sh' (compiles spread over the nodes).
    Make {
        #[arg(long, default_value_t = 8)]
        jobs: u32,
        /// The source tarball (default: scripts/fetch-redis.sh's redis 7.0.15).
        #[arg(long)]
        tree: Option<PathBuf>,
        #[command(flatten)]
        run: WorkloadRun,
    },
    /// The web workload on a --netns cluster: nginx on every node as one service on port 80
    /// serving /www, wrk from ext through the gateway; beside it nginx on node 3 alone,
    /// reached at its own address.
    Web {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// wrk's open connections.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// The documents: the study's one 1,500-byte file, or a SPECweb99-like mix.
        #[arg(long, value_enum, default_value = "paper")]
        documents: ssi_web::driver::Mix,
        /// Keep connections open (default: a new connection per request, as HTTP/1.0 in 1997).
        #[arg(long)]
        keepalive: bool,
        #[command(flatten)]
        run: WorkloadRun,
    },
    /// The IN coprocessor (Friedman & Birman): switch, EAs, QEs, UI as ORB services; calls
    /// answered within a deadline, with faults and overload injected on request.
    In {
        #[arg(long, default_value_t = 4)]
        qes: u32,
        /// Calls offered per second.
        #[arg(long, default_value_t = 20_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 1_000_000)]
        calls: u64,
        #[arg(long, default_value_t = 100)]
        deadline_ms: u32,
        /// The EAs' sweeper period and query batching interval.
        #[arg(long, default_value_t = 15)]
        sweep_ms: u32,
        /// Kill a node running a QE or an EA with SIGKILL after this many calls: qe@500000, ea@500000.
        #[arg(long)]
        kill: Option<String>,
        /// Add a QE after this many calls (state transfer, then serving): qe@500000.
        #[arg(long)]
        add: Option<String>,
        /// Offer RATE calls/s from second FROM to TO of the run: 40000@10..15 (repeatable).
        #[arg(long)]
        overload: Vec<String>,
        /// Calls per interval of the per-interval shares (the paper: 20,000).
        #[arg(long, default_value_t = 20_000)]
        interval_calls: u64,
        /// Numbers in the database.
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
        /// Extra work per query at a QE, microseconds.
        #[arg(long, default_value_t = 0)]
        qe_service_us: u32,
        /// Watermarks, as HIGH,LOW: pending calls at which an EA sheds new ones, and below
        /// which it takes them again.
        #[arg(long, value_parser = parse_marks)]
        ea_marks: Option<(u32, u32)>,
        /// The same for a QE's backlog of queries.
        #[arg(long, value_parser = parse_marks)]
        qe_marks: Option<(u32, u32)>,
        /// Write the per-interval plot (SVG) here.
        #[arg(long)]
        svg: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A Jepsen-style history: agents on a 5-node --netns cluster of its own bind ports,
    /// create, rename and remove files and append fsync'd numbers while a nemesis cuts the
    /// interconnect and crashes nodes; then a checker looks for ports held twice, lost or
    /// doubled writes, views numbered alike and mutations acknowledged without quorum.
    /// Exits 1 when it finds an anomaly. Needs root.
    History {
        /// How many faults (each held, then taken away).
        #[arg(long, default_value_t = 100)]
        faults: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Each fault is held between MIN and MAX seconds.
        #[arg(long, default_value = "0.5..6")]
        hold: String,
        /// The negative control: nodes without quorum go on granting (the checker must find anomalies).
        #[arg(long)]
        no_fencing: bool,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One agent of `history` (started on each node by `ssi workload history`).
    #[command(hide = true)]
    HistoryAgent {
        #[arg(long)]
        node: u32,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        stop: PathBuf,
        #[arg(long)]
        port_base: u16,
        #[arg(long)]
        ports: u16,
        /// NAME=DIR: a volume's history directory on this node's mount.
        #[arg(long)]
        volume: Vec<String>,
    },
    /// Scalable distributed data structures: the AMOS-SDDS Person join in an RP* file
    /// (Query 1 pairs, Query 2 counts; E- and I-strategy), beside SQLite on one node; key
    /// searches with warm and one-bucket images.
    Sdds {
        /// Cases as TUPLES:BUCKETS,... (the paper's speed-up: 20000:1..5; scale-up up to 300000:15).
        #[arg(long, default_value = "20000:1,20000:3,20000:5,100000:5,300000:15")]
        cases: String,
        /// Strategies: e (our code), i (SQLite in each bucket), or e,i.
        #[arg(long, value_delimiter = ',', default_value = "e,i")]
        strategy: Vec<String>,
        /// Query 1 (pairs returned) only up to this many tuples.
        #[arg(long, default_value_t = 60_000)]
        q1_max: u64,
        /// The I-strategy only up to this many tuples.
        #[arg(long, default_value_t = 100_000)]
        i_max: u64,
        /// The one-node SQLite baseline only up to this many tuples.
        #[arg(long, default_value_t = 300_000)]
        baseline_max: u64,
        /// Probe tuples per shipped batch.
        #[arg(long, default_value_t = 20_000)]
        chunk: usize,
        /// Key searches on the last case (0: none).
        #[arg(long, default_value_t = 200_000)]
        searches: u64,
        /// Write the Figs 3–4 plots as PREFIX-elapsed.svg and PREFIX-per-tuple.svg.
        #[arg(long)]
        svg_prefix: Option<PathBuf>,
        /// Masters of the Redis Cluster started as the key search baseline (0: none).
        #[arg(long, default_value_t = 3)]
        redis_masters: u32,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir_or = |d: Option<PathBuf>| d.unwrap_or_else(local::default_dir);
    match cli.cmd {
        Cmd::Up { nodes, dir, netns, dispatch, config } => {
            let dir = dir_or(dir);
            match local::up(&UpOptions { config, netns, dispatch, ..UpOptions::new(dir.clone(), nodes) })? {
                UpOutcome::Started(c) => println!("started {} nodes in {}", c.nodes.len(), dir.display()),
                UpOutcome::Restarted(_, ids) => println!("cluster in {} was running; restarted node(s) {ids:?}", dir.display()),
            }
            ssi_node::status::print_status(&local::status(&dir)?);
        }
        Cmd::Down { dir } => {
            let dir = dir_or(dir);
            let r = local::down(&dir)?;
            print!("stopped {} node daemons in {} ({} after SIGKILL), unmounted {}", r.stopped, dir.display(), r.killed, r.unmounted);
            if r.orphans > 0 {
                print!(", killed {} processes the nodes had started", r.orphans);
            }
            if r.namespaces > 0 {
                print!(", removed {} network namespaces", r.namespaces);
            }
            println!();
        }
        Cmd::Crash { node, dir } => {
            let r = ssi_node::faults::crash(&dir_or(dir), node)?;
            println!("node {node} crashed: {} processes killed at once, {} mounts torn down", r.killed, r.unmounted);
        }
        Cmd::Partition { groups, oneway, dir } => {
            let cut = ssi_node::faults::partition(&dir_or(dir), &groups, oneway)?;
            let arrow = if cut.oneway { "->" } else { "/" };
            println!("partitioned {:?} {arrow} {:?}", cut.a, cut.b);
        }
        Cmd::Cluster { op } => {
            let (node, add, dir) = match op {
                ClusterOp::AddNode { node, dir } => (node, true, dir),
                ClusterOp::RemoveNode { node, dir } => (node, false, dir),
            };
            let cfg = local::load(&dir_or(dir))?;
            let q = ssi_node::voters::change(&cfg, node, add)?;
            println!("voters {:?} (leader node {}, term {})", q.voters, q.leader, q.term);
        }
        Cmd::Heal { dir } => {
            let had = ssi_node::faults::heal(&dir_or(dir))?;
            println!("{}", if had { "healed: the interconnect is whole again" } else { "there was no partition" });
        }
        Cmd::Status { json, node, dir } => {
            let s = local::status_from(&dir_or(dir), node)?;
            if json {
                println!("{}", ssi_node::status::status_json(&s));
            } else {
                ssi_node::status::print_status(&s);
            }
        }
        Cmd::Node { config, id, with } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
                .with_writer(std::io::stderr)
                .init();
            // Every node serves the workloads' objects; a benchmark's only where asked for.
            let mut ext: Vec<Box<dyn ssi_node::daemon::Extension>> = vec![Box::new(ssi_incop::Servants), Box::new(ssi_sdds::Servants)];
            for w in with {
                match w.as_str() {
                    ssi_bench::servant::NAME => ext.push(Box::new(ssi_bench::servant::Servants)),
                    other => anyhow::bail!("unknown servants {other:?} (known: {})", ssi_bench::servant::NAME),
                }
            }
            ssi_node::daemon::run(&config, id, ext)?;
        }
        Cmd::Mnt { node, dir } => {
            let cfg = local::load(&dir_or(dir))?;
            println!("{}", cfg.node(node).map_err(|e| anyhow::anyhow!(e))?.mountpoint.display());
        }
        Cmd::Bench { which: BenchCmd::Trace { json, rounds, seconds } } => {
            if !(0.05..=120.0).contains(&seconds) || rounds == 0 {
                anyhow::bail!("--seconds must be 0.05..=120 and --rounds at least 1");
            }
            ssi_bench::trace::run(&ssi_bench::trace::Options { json, rounds, duration: Duration::from_secs_f64(seconds) })?
        }
        Cmd::Bench { which: BenchCmd::Orb { json, rounds, seconds, payloads, inflight, trace } } => {
            if !(0.05..=120.0).contains(&seconds) || rounds == 0 {
                anyhow::bail!("--seconds must be 0.05..=120 and --rounds at least 1");
            }
            ssi_bench::orb::run(&ssi_bench::orb::Options {
                json,
                rounds,
                duration: Duration::from_secs_f64(seconds),
                payloads,
                inflight,
                trace,
            })?;
        }
        Cmd::Bench { which: BenchCmd::In { json, max_qes, seconds, start_rate, max_rate, svg } } => {
            let valid = (2..=64).contains(&max_qes) && (0.1..=600.0).contains(&seconds) && start_rate >= 1.0 && max_rate >= start_rate;
            if !valid {
                anyhow::bail!("--max-qes must be 2..=64, --seconds 0.1..=600, and 1 ≤ --start-rate ≤ --max-rate");
            }
            ssi_bench::incop::run_bench(&ssi_bench::incop::Options { json, max_qes, seconds, start_rate, max_rate, svg })?
        }
        Cmd::Bench { which: BenchCmd::Net { json, rounds, seconds, connections, dispatch } } => {
            if !(1.0..=600.0).contains(&seconds) || rounds == 0 || connections == 0 {
                anyhow::bail!("--seconds must be 1..=600, --rounds and --connections at least 1");
            }
            ssi_bench::net::run(&ssi_bench::net::Options { json, rounds, seconds, connections, dispatch })?
        }
        Cmd::Bench { which: BenchCmd::Fs { json, rounds, seconds, file_mib, on_temp_dir } } => {
            if !(0.1..=600.0).contains(&seconds) || file_mib == 0 || rounds == 0 {
                anyhow::bail!("--seconds must be 0.1..=600, --file-mib and --rounds at least 1");
            }
            ssi_bench::fs::run(&ssi_bench::fs::Options { json, rounds, seconds, file_mib, on_temp_dir })?;
        }
        Cmd::Bench { which: BenchCmd::Rexec { json, runs, tree, no_build, jobs } } => {
            if runs == 0 || jobs == 0 {
                anyhow::bail!("--runs and --jobs must be at least 1");
            }
            let tree = if no_build { Some(PathBuf::new()) } else { tree };
            ssi_bench::rexec::run(&ssi_bench::rexec::Options { json, runs, tree, jobs })?;
        }
        Cmd::Demo { dir, full } => {
            let dir = dir.unwrap_or_else(|| local::default_dir().join("demo"));
            ssi_demo::run(&dir, full)?;
        }
        // The tool's own failures exit 255 (as ssh's), apart from the command's exit codes.
        Cmd::Rexec { nodes, all, any: _, prefix, tty, what: RemoteCmd { cwd, dir, cmd } } => {
            let dir = dir_or(dir);
            let nodes = if all { local::load(&dir)?.nodes.keys().copied().collect() } else { nodes };
            let o = ssi_node::rexec::RexecOptions { dir, node: nodes.first().copied(), tty, cwd, argv: cmd, interpose: None };
            let Err(e) =
                if nodes.len() > 1 || all || prefix { ssi_node::fanout::rexec_on(o, nodes, prefix) } else { ssi_node::rexec::rexec(o) };
            fail_255(e)
        }
        Cmd::Run { node, service, policy, weight, what: RemoteCmd { cwd, dir, cmd } } => {
            if !matches!(policy.as_str(), "rr" | "weighted" | "sticky") {
                anyhow::bail!("--policy must be rr, weighted or sticky");
            }
            if !(1..=1000).contains(&weight) {
                anyhow::bail!("--weight must be 1..=1000");
            }
            let interpose = Some(ssi_procmgmt::proto::Interpose { service: service.unwrap_or_default(), policy, weight });
            let Err(e) =
                ssi_node::rexec::rexec(ssi_node::rexec::RexecOptions { dir: dir_or(dir), node, tty: false, cwd, argv: cmd, interpose });
            fail_255(e)
        }
        Cmd::Sh { args } => {
            let Err(e) = ssi_node::rexec::sh(dir_or(None), args);
            fail_255(e)
        }
        Cmd::Ps { all, full, json, dir } => ssi_node::ps::run(&ssi_node::ps::PsOptions { dir: dir_or(dir), all, full, json })?,
        Cmd::Kill { dir, args } => ssi_node::rexec::kill(dir_or(dir), args)?,
        Cmd::Ports { json, dir, op: None } => ssi_node::ports::list(&dir_or(dir), json)?,
        Cmd::Ports { dir, op: Some(op), .. } => {
            let (PortsCmd::Bind { at, .. } | PortsCmd::Release { at }) = &op;
            let (service, policy, release) = match &op {
                PortsCmd::Bind { service, policy, .. } => (service.clone(), policy.clone(), false),
                PortsCmd::Release { .. } => (None, "rr".to_string(), true),
            };
            let o = ssi_node::ports::BindOptions {
                dir: dir_or(dir),
                node: at.node,
                udp: at.udp,
                port: at.port,
                pid: at.pid,
                service,
                policy,
                release,
            };
            ssi_node::ports::change(&o)?
        }
        Cmd::Ext { dir, command } => {
            let ns = local::ext_namespace(&dir_or(dir))?;
            // exec, not spawn: `ip netns exec` execs the command in turn, so this process *is*
            // the command — a signal to it reaches the command, nothing is left behind.
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new("ip").args(["netns", "exec", &ns]).args(&command).exec();
            anyhow::bail!("ip netns exec: {err}");
        }
        Cmd::Trace { which: TraceCmd::Record { out, duration, in_process, syscalls, dir, command } } => {
            if duration.is_some_and(|d| !(d > 0.0 && d < 7.0 * 86400.0)) {
                anyhow::bail!("--duration must be a positive number of seconds");
            }
            let r = ssi_node::trace::record(&ssi_node::trace::RecordOptions {
                dir: dir_or(dir),
                out,
                duration: duration.map(Duration::from_secs_f64),
                in_process,
                syscalls,
                command,
                quiet: false,
            })?;
            if let Some(st) = r.status.filter(|s| !s.success()) {
                // The trace is written; exit as the traced command did.
                eprintln!("ssi trace: the traced command failed ({st})");
                std::process::exit(st.code().unwrap_or(1));
            }
        }
        Cmd::Trace { which: TraceCmd::Report { trace, html, json } } => ssi_trace::report::run(&trace, html.as_deref(), json)?,
        Cmd::Trace { which: TraceCmd::Export { trace, out, limit } } => ssi_trace::perfetto::export(&trace, &out, limit)?,
        Cmd::Workload { which } => match which {
            WorkloadCmd::Db { run: WorkloadRun { trace: Some(out), dir, .. }, .. }
            | WorkloadCmd::Make { run: WorkloadRun { trace: Some(out), dir, .. }, .. }
            | WorkloadCmd::Web { run: WorkloadRun { trace: Some(out), dir, .. }, .. } => ssi_node::trace::rerun_traced(&out, &dir_or(dir))?,
            WorkloadCmd::Db { seconds, branches, accounts, pgbench, pg_scale, pg_clients, run: WorkloadRun { json, dir, trace: None } } => {
                if !(0.1..=3600.0).contains(&seconds) || branches == 0 || accounts < branches || pg_scale == 0 || pg_clients == 0 {
                    anyhow::bail!(
                        "--seconds must be 0.1..=3600, --branches, --pg-scale and --pg-clients at least 1, --accounts at least --branches"
                    );
                }
                if pgbench {
                    let o = ssi_db::pgbench::PgbenchOptions { dir: dir_or(dir), seconds, scale: pg_scale, clients: pg_clients, json };
                    return Ok(ssi_db::pgbench::pgbench(&o)?);
                }
                let scale = ssi_db::bank::Scale { branches, accounts };
                ssi_db::driver::db(&ssi_db::driver::DbOptions { dir: dir_or(dir), seconds, scale, json })?
            }
            WorkloadCmd::DbClient { db, node, seconds, branches, accounts } => {
                ssi_db::driver::db_client(&db, node, seconds, ssi_db::bank::Scale { branches, accounts })?
            }
            WorkloadCmd::Make { jobs, tree, run: WorkloadRun { json, dir, trace: None } } => {
                if jobs == 0 {
                    anyhow::bail!("--jobs must be at least 1");
                }
                ssi_make::driver::make(&ssi_make::driver::MakeOptions { dir: dir_or(dir), jobs, tree, json })?
            }
            WorkloadCmd::Web { seconds, connections, documents, keepalive, run: WorkloadRun { json, dir, trace: None } } => {
                if !(1.0..=3600.0).contains(&seconds) || connections == 0 {
                    anyhow::bail!("--seconds must be 1..=3600 and --connections at least 1");
                }
                ssi_web::driver::web(&ssi_web::driver::WebOptions {
                    dir: dir_or(dir),
                    seconds,
                    connections,
                    mix: documents,
                    close: !keepalive,
                    json,
                })?
            }
            WorkloadCmd::In {
                qes,
                rate,
                calls,
                deadline_ms,
                sweep_ms,
                kill,
                add,
                overload,
                interval_calls,
                entries,
                qe_service_us,
                ea_marks,
                qe_marks,
                svg,
                json,
                dir,
            } => {
                if !(rate > 0.0 && rate <= 1e7) || calls == 0 || interval_calls == 0 {
                    anyhow::bail!("--rate must be in (0, 1e7], --calls and --interval-calls at least 1");
                }
                if qes < 2 {
                    anyhow::bail!("--qes must be at least 2 (every entry on more than one QE)");
                }
                let mut faults = Vec::new();
                if let Some(k) = kill {
                    faults.push(ssi_incop::driver::parse_fault(&k, false).map_err(|e| anyhow::anyhow!("--kill {e}"))?);
                }
                if let Some(a) = add {
                    faults.push(ssi_incop::driver::parse_fault(&a, true).map_err(|e| anyhow::anyhow!("--add {e}"))?);
                }
                let overloads = overload
                    .iter()
                    .map(|o| ssi_incop::driver::parse_overload(o).map_err(|e| anyhow::anyhow!("--overload {e}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let d = ssi_incop::driver::default_params();
                let (ea_high, ea_low) = ea_marks.unwrap_or((d.ea_high, d.ea_low));
                let (qe_high, qe_low) = qe_marks.unwrap_or((d.qe_high, d.qe_low));
                let params = ssi_incop::proto::Params {
                    deadline_ms,
                    sweep_ms,
                    db_entries: entries,
                    qe_service_us,
                    ea_high,
                    ea_low,
                    qe_high,
                    qe_low,
                };
                let o = ssi_incop::driver::InOptions {
                    dir: dir_or(dir),
                    qes,
                    rate,
                    calls,
                    params,
                    faults,
                    overloads,
                    interval_calls,
                    svg,
                    json,
                };
                ssi_incop::driver::workload(&o)?
            }
            WorkloadCmd::History { faults, seed, hold, no_fencing, json, dir } => {
                let hold = hold
                    .split_once("..")
                    .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)))
                    .filter(|(a, b)| *a > 0.0 && b > a && *b <= 600.0)
                    .ok_or_else(|| anyhow::anyhow!("--hold {hold:?}: MIN..MAX seconds, 0 < MIN < MAX <= 600"))?;
                let o = ssi_history::driver::HistoryOptions {
                    dir: dir.unwrap_or_else(|| local::default_dir().join("history")),
                    nodes: 5,
                    faults,
                    seed,
                    fencing: !no_fencing,
                    hold,
                };
                if !ssi_history::driver::workload(o, json)? {
                    std::process::exit(1);
                }
            }
            WorkloadCmd::HistoryAgent { node, log, stop, port_base, ports, volume } => {
                let volumes = volume
                    .iter()
                    .map(|v| v.split_once('=').map(|(n, d)| (n.to_string(), PathBuf::from(d))))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| anyhow::anyhow!("--volume NAME=DIR"))?;
                if volumes.is_empty() || ports == 0 {
                    anyhow::bail!("an agent needs a --volume and --ports at least 1");
                }
                ssi_history::agent::run(ssi_history::agent::AgentOptions { node, log, volumes, port_base, ports, stop })?
            }
            WorkloadCmd::Sdds { cases, strategy, q1_max, i_max, baseline_max, chunk, searches, svg_prefix, redis_masters, json, dir } => {
                let cases = ssi_sdds::driver::parse_cases(&cases).map_err(|e| anyhow::anyhow!("--cases {e}"))?;
                let strategies = strategy
                    .iter()
                    .map(|s| match s.as_str() {
                        "e" => Ok(false),
                        "i" => Ok(true),
                        o => Err(anyhow::anyhow!("--strategy {o:?}: e or i")),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if chunk == 0 {
                    anyhow::bail!("--chunk must be at least 1");
                }
                let o = ssi_sdds::driver::SddsOptions {
                    dir: dir_or(dir),
                    cases,
                    strategies,
                    q1_max,
                    i_max,
                    baseline_max,
                    chunk,
                    searches,
                    svg_prefix,
                    redis_masters,
                    json,
                };
                ssi_sdds::driver::workload(&o)?
            }
        },
    }
    Ok(())
}

/// `HIGH,LOW` watermarks.
fn parse_marks(s: &str) -> Result<(u32, u32), String> {
    let (h, l) = s.split_once(',').ok_or_else(|| format!("{s:?}: expected HIGH,LOW"))?;
    let (h, l): (u32, u32) =
        (h.parse().map_err(|_| format!("{h:?} is not a count"))?, l.parse().map_err(|_| format!("{l:?} is not a count"))?);
    if h == 0 || l > h {
        return Err(format!("{s:?}: need 0 < LOW ≤ HIGH"));
    }
    Ok((h, l))
}

/// One line: the reason and its causes.
/// The error and its causes on one line; a cause whose text its parent already shows (many
/// errors print their source in their own message) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if line.is_empty() {
            line = cause;
        } else if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line.replace('\n', " ")
}

fn fail_255(e: impl Into<anyhow::Error>) -> ! {
    let e = e.into();
    eprintln!("ssi: {}", one_line(&e));
    std::process::exit(255)
}

#[derive(Subcommand)]
enum ClusterOp {
    /// Make a configured node a voter of the quorum (again).
    AddNode {
        node: u32,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Take a node out of the quorum's voters (it may stay up, as a member that does not vote).
    RemoveNode {
        node: u32,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    quiet_when_stdout_closes();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssi: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `ssi ps -ef | head`: once the reader is gone, stop as a C tool killed by SIGPIPE would
/// (status 141), not with a panic message. SIGPIPE itself stays ignored: the tool's writes to
/// daemons' sockets (writev, without MSG_NOSIGNAL) would raise it when a daemon dies.
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied()).unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
