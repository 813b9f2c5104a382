// SPDX-License-Identifier: Apache-2.0
// The second layer of bind interposition: cgroup programs on the cgroup of a node's
// daemon, and so of every process it starts, whatever way they bind (seccomp sees `bind()`
// only; io_uring's bind and programs started without `ssi run` pass it by).
//
// `bind4`/`bind6` refuse with EADDRINUSE a bind to a port the SAP table says another node holds
// (user space keeps `refused` in step with the table); `post_bind4`/`post_bind6` report each
// bind that succeeded in `events`, so user space can enter it in the SAP if it is not there
// yet; `release` reports that a process that bound a port closed a socket, for user space to
// check that process's ports and give back what is gone.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define EADDRINUSE 98

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);  // protocol << 16 | port
    __type(value, __u8);
} refused SEC(".maps");

// The daemon's own process (its tgid): it lives in the cgroup too, but its binds (the ORB's,
// the dispatcher's proxy) are its own business.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} daemon SEC(".maps");

static __always_inline int is_daemon(void) {
    __u32 zero = 0;
    __u32 *d = bpf_map_lookup_elem(&daemon, &zero);
    return d && *d == (__u32)(bpf_get_current_pid_tgid() >> 32);
}

#define EVENT_BIND 1
#define EVENT_RELEASE 2

struct event {
    __u32 kind;
    __u32 pid;
    __u32 proto;
    __u32 port;
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 << 10);
} events SEC(".maps");

static __always_inline void report(__u32 kind, __u32 proto, __u32 port) {
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return;  // user space also sweeps: a lost report only delays it
    e->kind = kind;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->proto = proto;
    e->port = port;
    bpf_ringbuf_submit(e, 0);
}

// Processes that bound a port in this cgroup: only their closings are worth a report.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u32);  // tgid
    __type(value, __u8);
} binders SEC(".maps");

// Sockets bound to port 0 (the kernel picks an ephemeral one): their port is no one's business.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);  // socket cookie
    __type(value, __u8);
} any_port SEC(".maps");

static __always_inline int on_bind(struct bpf_sock_addr *ctx) {
    __u32 port = bpf_ntohs((__u16)ctx->user_port);
    __u32 proto = ctx->protocol;
    if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || is_daemon())
        return 1;
    if (port == 0) {
        __u64 cookie = bpf_get_socket_cookie(ctx);
        __u8 one = 1;
        bpf_map_update_elem(&any_port, &cookie, &one, BPF_ANY);
        return 1;
    }
    __u32 key = proto << 16 | port;
    if (bpf_map_lookup_elem(&refused, &key)) {
        bpf_set_retval(-EADDRINUSE);
        return 0;
    }
    return 1;
}

SEC("cgroup/bind4")
int bind4(struct bpf_sock_addr *ctx) {
    return on_bind(ctx);
}

SEC("cgroup/bind6")
int bind6(struct bpf_sock_addr *ctx) {
    return on_bind(ctx);
}

// After a bind of a chosen port succeeded.
static __always_inline int on_bound(struct bpf_sock *sk) {
    __u32 proto = sk->protocol;
    __u32 port = sk->src_port;
    if (port == 0 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || is_daemon())
        return 1;
    __u64 cookie = bpf_get_socket_cookie(sk);
    if (bpf_map_lookup_elem(&any_port, &cookie)) {
        bpf_map_delete_elem(&any_port, &cookie);
        return 1;
    }
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    __u8 one = 1;
    bpf_map_update_elem(&binders, &tgid, &one, BPF_ANY);
    report(EVENT_BIND, proto, port);
    return 1;
}

SEC("cgroup/post_bind4")
int post_bind4(struct bpf_sock *sk) {
    return on_bound(sk);
}

SEC("cgroup/post_bind6")
int post_bind6(struct bpf_sock *sk) {
    return on_bound(sk);
}

// A socket of a process that bound a port is closing: user space checks that process's ports.
// (This hook may not read the socket's port or state.)
SEC("cgroup/sock_release")
int release(struct bpf_sock *sk) {
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (bpf_map_lookup_elem(&binders, &tgid))
        report(EVENT_RELEASE, 0, 0);
    return 1;
}
