// SPDX-License-Identifier: Apache-2.0
// The recorder's BPF side (docs/trace-format.md).
//
// 1. `on_record`, attached to the ORB's USDT probe `ssi:records` in every traced daemon: arg0
//    points at a bundle of trace records the daemon built (arg1 bytes, whole records, at most
//    16 KiB); it is copied as is into the ring buffer, submitted without a wake-up (user
//    space drains the ring on a timer and splits bundles into records).
// 2. The transport's socket calls (every send/write and recv/read syscall on a TCP socket) of
//    the traced daemons only, at the socket layer's tracepoints: calls and bytes per (pid,
//    local address, remote address, direction), summed in a hash map that user space reads at
//    the end and matches to node pairs by the nodes' ORB addresses.
#include <stdbool.h>
#include <linux/types.h>
#include <asm/ptrace.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>

#define MAX_RECORD (16 << 10)
#define HEADER_LEN 24

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 << 20);
} records SEC(".maps");

struct scratch {
    __u8 buf[MAX_RECORD];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct scratch);
} scratch SEC(".maps");

// [0] bundles taken, [1] bundles lost (ring full), [2] bundles refused (bad length).
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 which) {
    __u64 *v = bpf_map_lookup_elem(&stats, &which);
    if (v)
        *v += 1;
}

SEC("usdt")
int on_record(struct pt_regs *ctx) {
    long ptr = 0, len = 0;
    if (bpf_usdt_arg(ctx, 0, &ptr) < 0 || bpf_usdt_arg(ctx, 1, &len) < 0 || !ptr || len == 0)
        return 0;
    if (len < HEADER_LEN || len > MAX_RECORD) {
        count(2);
        return 0;
    }
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!s)
        return 0;
    if (bpf_probe_read_user(s->buf, len, (void *)ptr) < 0) {
        count(2);
        return 0;
    }
    if (bpf_ringbuf_output(&records, s->buf, len, BPF_RB_NO_WAKEUP) < 0) {
        count(1);
        return 0;
    }
    count(0);
    return 0;
}

// --- wire level -----------------------------------------------------------------------

// Traced daemons: pid (tgid) -> 1, filled by user space.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} daemons SEC(".maps");

// The kernel's socket, as far as we read it; offsets come from the kernel's BTF at load time
// (CO-RE), found through the anonymous unions by name.
struct sock_common {
    __be32 skc_daddr;
    __be32 skc_rcv_saddr;
    __be16 skc_dport;
    __u16 skc_num;
    unsigned short skc_family;
} __attribute__((preserve_access_index));
struct sock {
    struct sock_common __sk_common;
    __u16 sk_protocol;
} __attribute__((preserve_access_index));

struct wire_key {
    __u32 pid;
    __u32 saddr;  // local IPv4 address (network order), 0 for IPv6
    __u32 daddr;  // remote
    __u16 sport;  // local port (host order)
    __u16 dport;  // remote port (host order)
    __u32 dir;    // 0 sent, 1 received
    __u32 pad;
};
struct wire_val {
    __u64 calls;
    __u64 bytes;
    __u64 iovs;   // with --syscalls: the iovecs the syscalls passed
};

// With --syscalls: the iovec count of the transport syscall each daemon thread is in,
// recorded at syscall entry and taken by the socket tracepoint inside the same syscall.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u64);
} inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct wire_key);
    __type(value, struct wire_val);
} wire SEC(".maps");

// Every send and receive on a socket passes sock_sendmsg/sock_recvmsg, whichever syscall made
// it (write, writev, sendto, sendmsg; read, readv, recvfrom, recvmsg), and the sock_*_length
// tracepoints fire there; taken as BTF raw tracepoints (a direct call with the kernel's
// arguments). Syscall tracepoints would see the same calls, but enabling any of them puts
// every task on the machine on the kernel's slow syscall path (measured: +19% on the ORB's
// two-way p50 for enter/exit pairs, +17% for a raw sys_exit program), and the perf flavour of
// these tracepoints cost +17% too.
static __always_inline int count_io(struct sock *sk, int ret, int flags, __u32 dir) {
    if (ret <= 0 || (dir == 1 && (flags & 2 /* MSG_PEEK */)))
        return 0;
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!bpf_map_lookup_elem(&daemons, &pid))
        return 0;
    if (sk->sk_protocol != 6 /* TCP */)
        return 0;
    struct wire_key k = {.pid = pid, .dir = dir};
    if (sk->__sk_common.skc_family == 2 /* AF_INET */) {
        k.saddr = sk->__sk_common.skc_rcv_saddr;
        k.daddr = sk->__sk_common.skc_daddr;
    }
    k.sport = sk->__sk_common.skc_num;
    k.dport = __builtin_bswap16(sk->__sk_common.skc_dport);
    struct wire_val *v = bpf_map_lookup_elem(&wire, &k);
    if (!v) {
        struct wire_val z = {};
        bpf_map_update_elem(&wire, &k, &z, BPF_NOEXIST);
        v = bpf_map_lookup_elem(&wire, &k);
        if (!v)
            return 0;
    }
    __sync_fetch_and_add(&v->calls, 1);
    __sync_fetch_and_add(&v->bytes, ret);
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    __u64 *iovs = bpf_map_lookup_elem(&inflight, &tid);
    if (iovs)
        __sync_fetch_and_add(&v->iovs, *iovs);
    return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_send, struct sock *sk, int ret, int flags) { return count_io(sk, ret, flags, 0); }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_recv, struct sock *sk, int ret, int flags) { return count_io(sk, ret, flags, 1); }

// --- with --syscalls: iovec counts -----------------------------------------------------
// The syscall tracepoints (attached only when asked: enabling any of them puts every task on
// the machine on the slow syscall path, +17-19% on the ORB's two-way p50 here).

// tracefs events/syscalls/sys_enter_*/format: 8 bytes of common fields, the syscall number,
// then the arguments.
struct sys_enter_ctx {
    __u64 common;
    __s64 nr;
    __u64 args[6];
};

static __always_inline int enter(__u64 iovs) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 pid = id >> 32, tid = (__u32)id;
    if (bpf_map_lookup_elem(&daemons, &pid))
        bpf_map_update_elem(&inflight, &tid, &iovs, BPF_ANY);
    return 0;
}

static __always_inline int leave(void) {
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    bpf_map_delete_elem(&inflight, &tid);
    return 0;
}

// msghdr's msg_iovlen (struct user_msghdr: name, namelen, iov, iovlen, ...).
static __always_inline __u64 msg_iovlen(__u64 msg) {
    __u64 n = 0;
    bpf_probe_read_user(&n, sizeof(n), (void *)(msg + 24));
    return n;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct sys_enter_ctx *ctx) { return enter(1); }
SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct sys_enter_ctx *ctx) { return enter(1); }
SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct sys_enter_ctx *ctx) { return enter(ctx->args[2]); }
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct sys_enter_ctx *ctx) { return enter(msg_iovlen(ctx->args[1])); }
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct sys_enter_ctx *ctx) { return enter(1); }
SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct sys_enter_ctx *ctx) { return enter(1); }
SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct sys_enter_ctx *ctx) { return enter(ctx->args[2]); }
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct sys_enter_ctx *ctx) { return enter(msg_iovlen(ctx->args[1])); }

SEC("tracepoint/syscalls/sys_exit_sendto")
int exit_sendto(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_write")
int exit_write(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_writev")
int exit_writev(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int exit_sendmsg(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_readv")
int exit_readv(void *ctx) { return leave(); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(void *ctx) { return leave(); }
