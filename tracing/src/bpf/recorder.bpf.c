// SPDX-License-Identifier: Apache-2.0
// The recorder's BPF side (docs/trace-format.md).
//
// 1. `on_record`, attached to every USDT probe of the catalogue (provider `ssi`): arg0 points
//    at a trace record the probe point built in the daemon's memory; the record's own header
//    says how long it is. It is copied as is into the ring buffer, with the pid filled in.
//    Submitted without a wake-up: user space drains the ring on a timer.
// 2. Syscall tracepoints of the transport (sendto/sendmsg/write/writev out, recvfrom/recvmsg/
//    read/readv in) of the traced daemons only: calls, bytes and iovecs per (pid, fd,
//    direction), summed in a hash map that user space reads at the end and resolves to node
//    pairs (which fds are ORB connections is known only from /proc).
#include <stdbool.h>
#include <linux/types.h>
#include <asm/ptrace.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
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

// [0] records taken, [1] records lost (ring full), [2] records refused (bad length).
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
    long ptr = 0;
    if (bpf_usdt_arg(ctx, 0, &ptr) < 0 || !ptr)
        return 0;
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!s)
        return 0;
    if (bpf_probe_read_user(s->buf, HEADER_LEN, (void *)ptr) < 0) {
        count(2);
        return 0;
    }
    __u32 len = *(__u32 *)&s->buf[4];
    if (len < HEADER_LEN || len > MAX_RECORD) {
        count(2);
        return 0;
    }
    if (bpf_probe_read_user(s->buf, len, (void *)ptr) < 0) {
        count(2);
        return 0;
    }
    *(__u32 *)&s->buf[8] = bpf_get_current_pid_tgid() >> 32;
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

struct inflight {
    __u32 fd;
    __u32 dir;   // 0 out, 1 in
    __u64 iovs;
};

// Syscalls entered and not yet returned, by thread.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct inflight);
} inflight SEC(".maps");

struct wire_key {
    __u32 pid;
    __u32 fd;
    __u32 dir;
    __u32 pad;
};
struct wire_val {
    __u64 calls;
    __u64 bytes;
    __u64 iovs;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct wire_key);
    __type(value, struct wire_val);
} wire SEC(".maps");

// The syscall tracepoints' layout (tracefs events/syscalls/*/format): 8 bytes of common
// fields, the syscall number, then the arguments (enter) or the return value (exit).
struct sys_enter_ctx {
    __u64 common;
    __s64 nr;
    __u64 args[6];
};
struct sys_exit_ctx {
    __u64 common;
    __s64 nr;
    __s64 ret;
};

static __always_inline int enter(struct sys_enter_ctx *ctx, __u32 dir, __u64 iovs) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 pid = id >> 32, tid = (__u32)id;
    if (!bpf_map_lookup_elem(&daemons, &pid))
        return 0;
    struct inflight f = {.fd = (__u32)ctx->args[0], .dir = dir, .iovs = iovs};
    bpf_map_update_elem(&inflight, &tid, &f, BPF_ANY);
    return 0;
}

static __always_inline int leave(struct sys_exit_ctx *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    struct inflight *f = bpf_map_lookup_elem(&inflight, &tid);
    if (!f)
        return 0;
    struct wire_key k = {.pid = id >> 32, .fd = f->fd, .dir = f->dir};
    __u64 iovs = f->iovs;
    bpf_map_delete_elem(&inflight, &tid);
    if (ctx->ret <= 0)
        return 0;
    struct wire_val *v = bpf_map_lookup_elem(&wire, &k);
    if (!v) {
        struct wire_val z = {};
        bpf_map_update_elem(&wire, &k, &z, BPF_NOEXIST);
        v = bpf_map_lookup_elem(&wire, &k);
        if (!v)
            return 0;
    }
    __sync_fetch_and_add(&v->calls, 1);
    __sync_fetch_and_add(&v->bytes, ctx->ret);
    __sync_fetch_and_add(&v->iovs, iovs);
    return 0;
}

// msghdr's msg_iovlen (struct user_msghdr: name, namelen, iov, iovlen, ...).
static __always_inline __u64 msg_iovlen(__u64 msg) {
    __u64 n = 0;
    bpf_probe_read_user(&n, sizeof(n), (void *)(msg + 24));
    return n;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct sys_enter_ctx *ctx) { return enter(ctx, 0, 1); }
SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct sys_enter_ctx *ctx) { return enter(ctx, 0, 1); }
SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct sys_enter_ctx *ctx) { return enter(ctx, 0, ctx->args[2]); }
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct sys_enter_ctx *ctx) { return enter(ctx, 0, msg_iovlen(ctx->args[1])); }
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct sys_enter_ctx *ctx) { return enter(ctx, 1, 1); }
SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct sys_enter_ctx *ctx) { return enter(ctx, 1, 1); }
SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct sys_enter_ctx *ctx) { return enter(ctx, 1, ctx->args[2]); }
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct sys_enter_ctx *ctx) { return enter(ctx, 1, msg_iovlen(ctx->args[1])); }

SEC("tracepoint/syscalls/sys_exit_sendto")
int exit_sendto(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_write")
int exit_write(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_writev")
int exit_writev(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int exit_sendmsg(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_readv")
int exit_readv(struct sys_exit_ctx *ctx) { return leave(ctx); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct sys_exit_ctx *ctx) { return leave(ctx); }
