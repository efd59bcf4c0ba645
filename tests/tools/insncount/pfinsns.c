// SPDX-License-Identifier: GPL-2.0
/*
 * pfinsns: a QEMU TCG plugin (plugin API v1, QEMU 7.2 as Debian 12 ships it) that counts the
 * guest instructions every vCPU executes, and the crc32 instructions among them, and prints the
 * totals of all vCPUs each time a guest executes a marker instruction:
 *
 *   nopl 0xNN4d4650(%rax)   bytes 0f 1f 80 50 46 4d NN   (an architectural no-op; NN: the id)
 *
 * as a line "PFMARK id=NN insns=TOTAL crc32=TOTAL" in QEMU's log (-d plugin -D FILE).
 * `pf-mark N` executes the marker in the guest; `cargo xtask bench --count-insns` runs one at
 * each end of a measurement window and divides the difference by the writes completed in it.
 *
 * The API is declared here by hand (Debian ships no qemu-plugin.h); only the v1 calls below
 * are used. Counting is per translation block: a block's instructions are added when it starts
 * (a block left early by an exception counts whole, as in QEMU's own example plugins). Each
 * vCPU thread (MTTCG) adds only to its own counters; a marker sums them all.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                                   enum qemu_plugin_cb_flags flags, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_outs(const char *string);

EXPORT int qemu_plugin_version = 1;

#define MAX_VCPUS 64

/* One cache line per vCPU: each is written by its own vCPU thread only. */
static struct counters {
    volatile uint64_t insns;
    volatile uint64_t crc32;
    char pad[48];
} per_vcpu[MAX_VCPUS];

static const uint8_t MARKER[6] = { 0x0f, 0x1f, 0x80, 0x50, 0x46, 0x4d };

/* Whether the instruction is crc32 (F2 [66] [REX] 0F 38 F0/F1, prefixes in either order). */
static int is_crc32(const uint8_t *p, size_t n)
{
    size_t i = 0;
    int f2 = 0;
    while (i < n && (p[i] == 0xf2 || p[i] == 0x66)) {
        f2 |= p[i] == 0xf2;
        i++;
    }
    if (i < n && (p[i] & 0xf0) == 0x40)
        i++;
    return f2 && i + 3 <= n && p[i] == 0x0f && p[i + 1] == 0x38 && (p[i + 2] & 0xfe) == 0xf0;
}

/* udata of a block: its instructions (low 32 bits) and crc32 instructions (high 32 bits). */
static void tb_exec(unsigned int vcpu, void *udata)
{
    uint64_t u = (uint64_t)(uintptr_t)udata;
    struct counters *c = &per_vcpu[vcpu % MAX_VCPUS];
    c->insns += u & 0xffffffffu;
    c->crc32 += u >> 32;
}

static void marker_exec(unsigned int vcpu, void *udata)
{
    uint64_t insns = 0, crc = 0;
    char line[128];
    for (int i = 0; i < MAX_VCPUS; i++) {
        insns += per_vcpu[i].insns;
        crc += per_vcpu[i].crc32;
    }
    snprintf(line, sizeof(line), "PFMARK id=%u vcpu=%u insns=%llu crc32=%llu\n",
             (unsigned)(uintptr_t)udata, vcpu, (unsigned long long)insns, (unsigned long long)crc);
    qemu_plugin_outs(line);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t crc = 0;
    (void)id;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *p = qemu_plugin_insn_data(insn);
        size_t len = qemu_plugin_insn_size(insn);
        if (is_crc32(p, len))
            crc++;
        if (len == 7 && memcmp(p, MARKER, sizeof(MARKER)) == 0)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, marker_exec, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)p[6]);
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)((crc << 32) | (n & 0xffffffffu)));
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    return 0;
}
