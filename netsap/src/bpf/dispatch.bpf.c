// SPDX-License-Identifier: Apache-2.0
// The gateway's packet dispatcher, a TC program on the ingress of the interface
// that carries the cluster's global address.
//
// A packet for the global address whose (protocol, port) is a service in `services` goes to a
// node listening on that port: the first packet of a flow (a TCP SYN, or a UDP datagram of an
// unknown flow) picks a slot of the service per its policy and records the choice in `flows`;
// the rest of the flow follows the record. The packet is sent unchanged (IP and ports as the
// client sent them) to the chosen node's interconnect address, at layer 2, with
// `bpf_redirect_neigh` (the kernel resolves and fills in the MAC addresses): the node holds the
// global address on its loopback, accepts the packet as its own, and answers the client
// directly — direct server return: replies never pass this program.
//
// A packet for a port of no service that lies in a node's ephemeral range is an answer to
// that node's own outgoing traffic (nodes send from the global address): it goes to that node.
//
// Everything else (other addresses, unknown ports, the gateway's own listeners, fragments,
// non-IPv4) goes on to the gateway's own stack untouched.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define MAX_SLOTS 64
#define POLICY_RR 0
#define POLICY_STICKY 1

// Set by user space before the program sees traffic.
struct config {
    __u32 global_addr;   // the cluster's global address (network order)
    __u32 self_addr;     // this gateway's interconnect address (network order)
    __u32 ifindex;       // the interconnect interface
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct config);
} config SEC(".maps");

// A service: the interconnect addresses of its listening nodes, each as many times as its
// weight (user space expands and interleaves the weights), and the policy that picks one.
struct service {
    __u32 policy;
    __u32 nslots;
    __u32 next;          // the round-robin cursor
    __u32 slots[MAX_SLOTS];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);  // protocol << 16 | port
    __type(value, struct service);
} services SEC(".maps");

struct flow_key {
    __u32 saddr;
    __u16 sport;
    __u16 dport;
    __u32 proto;
};

struct flow {
    __u32 node;     // the node's interconnect address
    __u32 syn_seq;  // TCP: the sequence number of the SYN that started it
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 262144);
    __type(key, struct flow_key);
    __type(value, struct flow);
} flows SEC(".maps");

// Node-initiated traffic: nodes send from the global address, each from its own ephemeral
// port range (EPHEMERAL_BASE + i * EPHEMERAL_SPAN, ...), so the answers (to a port of no
// service) go back to the node whose range holds their port: entry i is that node's address.
#define EPHEMERAL_BASE 40000
#define EPHEMERAL_SPAN 400
#define EPHEMERAL_RANGES 64

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, EPHEMERAL_RANGES);
    __type(key, __u32);
    __type(value, __u32);
} ephemeral SEC(".maps");

static __always_inline int in_service(const struct service *s, __u32 node) {
    for (int i = 0; i < MAX_SLOTS; i++) {
        if (i >= s->nslots)
            return 0;
        if (s->slots[i] == node)
            return 1;
    }
    return 0;
}

// A 32-bit mix of the client's address (sticky policy): the same client, the same slot.
static __always_inline __u32 mix(__u32 x) {
    x ^= x >> 16;
    x *= 0x7feb352d;
    x ^= x >> 15;
    x *= 0x846ca68b;
    x ^= x >> 16;
    return x;
}

static __always_inline __u32 pick(struct service *s, __u32 saddr) {
    __u32 n = s->nslots;
    if (n == 0 || n > MAX_SLOTS)
        return 0;
    __u32 i = s->policy == POLICY_STICKY ? mix(saddr) % n : __sync_fetch_and_add(&s->next, 1) % n;
    // i < n <= MAX_SLOTS already, which the compiler knows and the verifier does not: hide
    // i from the compiler so that the mask (MAX_SLOTS is a power of two) is kept for the
    // verifier.
    asm volatile("" : "+r"(i));
    return s->slots[i & (MAX_SLOTS - 1)];
}

// Sends the packet as it is to `node` on the interconnect (the kernel fills in the MACs).
static __always_inline int to_node(const struct config *cfg, __u32 node) {
    struct bpf_redir_neigh nh = {.nh_family = 2 /* AF_INET */, .ipv4_nh = node};
    return bpf_redirect_neigh(cfg->ifindex, &nh, sizeof(nh), 0);
}

SEC("tc")
int dispatch(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    __u32 zero = 0;
    struct config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg)
        return TC_ACT_OK;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->daddr != cfg->global_addr)
        return TC_ACT_OK;
    if (ip->frag_off & bpf_htons(0x3fff))  // a fragment: only the first has ports
        return TC_ACT_OK;
    __u32 ihl = ip->ihl * 4;
    if (ihl < sizeof(*ip))
        return TC_ACT_OK;

    // The ports (and TCP's flags) are copied out rather than read in place: the verifier
    // cannot follow a header at a variable offset through the compiler's reordering.
    struct {
        __be16 source;
        __be16 dest;
        __be32 seq;     // TCP from here on
        __be32 ack_seq;
        __u8 doff;
        __u8 flags;     // CWR ECE URG ACK PSH RST SYN FIN
    } l4;
    int first = 0;
    if (ip->protocol == IPPROTO_TCP) {
        if (bpf_skb_load_bytes(skb, sizeof(*eth) + ihl, &l4, sizeof(l4)) < 0)
            return TC_ACT_OK;
        first = (l4.flags & 0x12) == 0x02;  // SYN without ACK
    } else if (ip->protocol == IPPROTO_UDP) {
        if (bpf_skb_load_bytes(skb, sizeof(*eth) + ihl, &l4, 4) < 0)
            return TC_ACT_OK;
    } else {
        return TC_ACT_OK;
    }
    __u16 sport = l4.source, dport = l4.dest;

    __u32 key = (__u32)ip->protocol << 16 | bpf_ntohs(dport);
    struct service *s = bpf_map_lookup_elem(&services, &key);
    if (!s) {
        __u32 p = bpf_ntohs(dport);
        if (p < EPHEMERAL_BASE)
            return TC_ACT_OK;
        __u32 range = (p - EPHEMERAL_BASE) / EPHEMERAL_SPAN;
        __u32 *owner = bpf_map_lookup_elem(&ephemeral, &range);
        if (!owner || !*owner || *owner == cfg->self_addr)
            return TC_ACT_OK;
        return to_node(cfg, *owner);
    }

    struct flow_key fk = {.saddr = ip->saddr, .sport = sport, .dport = dport, .proto = ip->protocol};
    struct flow *known = bpf_map_lookup_elem(&flows, &fk);
    __u32 node;
    // A SYN starts a new connection even when its 4-tuple was seen before (a reused client
    // port) — unless it is the same SYN again (a retransmission: same sequence number), which
    // must reach the node that may already have answered the first. A flow whose node has
    // left the service is placed again.
    int retransmit = first && known && known->syn_seq == l4.seq;
    if (known && (!first || retransmit) && in_service(s, known->node)) {
        node = known->node;
    } else {
        node = pick(s, ip->saddr);
        if (!node)
            return TC_ACT_OK;
        struct flow f = {.node = node, .syn_seq = first ? l4.seq : 0};
        bpf_map_update_elem(&flows, &fk, &f, BPF_ANY);
    }
    if (node == cfg->self_addr)
        return TC_ACT_OK;
    return to_node(cfg, node);
}
