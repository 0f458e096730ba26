/*
 * kcheck guest runner: plays folio-offload's kernel-parity scenarios on a real kernel.
 *
 * It reads a script of scenarios (see offload/kcheck/script.py for the format), runs
 * each in a fresh set of processes and prints one "KC ..." line per observation on
 * stdout. As /init of a qemu guest it mounts /proc and /sys first and powers the guest
 * off at the end; natively (`kcheck-guest SCRIPT`) it just runs.
 *
 * Processes: the scenario leader forks one server per "spawn" (setting its uid and
 * capabilities) and servers fork more ("fork"). The leader sends each step to its
 * server through a shared-memory mailbox and relays the answer. Shared regions are
 * memfds created by the leader before any server, so that every server can map them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define THP (2UL << 20)
#define MAXP 8
#define MAXR 16
#define MAXPIN 64
#define MAXNODE 8
#define OUTSZ (1 << 20)
#define CMDSZ (1 << 20)

struct slot {
    volatile int seq, done, pid, alive;
    char cmd[CMDSZ];
    char out[OUTSZ];
};
struct box { struct slot s[MAXP]; };

struct region {
    char *addr;
    unsigned long npages;
    int mapped;
    int fd; /* memfd of a shared region, -1 otherwise */
};

static struct box *box;
static struct region reg[MAXR]; /* this process's view of every region */
static int memfds[MAXR];
static unsigned long memfd_pages[MAXR];
static int pins[MAXPIN][3]; /* region, page, pipe read end */
static int npins;
static int self_slot = -1;

static long sys_move_pages(int pid, unsigned long n, void **pages, const int *nodes,
                           int *status, int flags)
{
    return syscall(SYS_move_pages, pid, n, pages, nodes, status, flags);
}

static long sys_migrate_pages(int pid, unsigned long maxnode, const unsigned long *old,
                              const unsigned long *new)
{
    return syscall(SYS_migrate_pages, pid, maxnode, old, new);
}

static long sys_mbind(void *addr, unsigned long len, int mode, const unsigned long *mask,
                      unsigned long maxnode, unsigned flags)
{
    return syscall(SYS_mbind, addr, len, mode, mask, maxnode, flags);
}

static void fill(char *p, unsigned long seed, unsigned long page)
{
    for (unsigned long i = 0; i < PAGE; i++)
        p[i] = (char)((seed * 131 + i * 7 + (i >> 8) + page) & 0xff);
}

static uint32_t page_hash(const unsigned char *p)
{
    uint32_t h = 0;
    for (uint32_t i = 0; i < PAGE; i++)
        h += (p[i] + 1u) * (i * 2654435761u + 0x9E3779B9u);
    return h;
}

static void outf(char *out, const char *fmt, ...)
{
    size_t n = strlen(out);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + n, OUTSZ - n, fmt, ap);
    va_end(ap);
}

/* -- steps run by a server ------------------------------------------------------------ */
/* A mapping at an ALIGN-aligned address: of memfd FD at offset OFF (shared), or
 * anonymous private memory for FD -1. Shared mappings are 64 KiB-aligned, as the model
 * places them, so that the kernel's fault-around window (fault_around_bytes) covers the
 * same pages in both; private THP mappings are 2 MiB-aligned. */
static char *map_aligned(int fd, unsigned long len, unsigned long off, unsigned long align)
{
    char *raw = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return raw;
    char *a = (char *)(((unsigned long)raw + align - 1) & ~(align - 1));
    int flags = (fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED) | MAP_FIXED;
    char *m = mmap(a, len, PROT_READ | PROT_WRITE, flags, fd, off);
    if (a > raw) munmap(raw, a - raw);
    if (raw + len + align > a + len) munmap(a + len, raw + len + align - (a + len));
    return m;
}

static void do_mmap(char *out, int r, unsigned long npages, int order, int populate,
                    int shared, int node)
{
    unsigned long len = npages * PAGE;
    char *a;
    if (shared)
        a = map_aligned(memfds[r], len, 0, 64UL << 10);
    else
        a = map_aligned(-1, len, 0, order == 9 ? THP : PAGE);
    if (a == MAP_FAILED) { outf(out, "err=%d", errno); return; }
    if (!shared)
        madvise(a, len, order == 9 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    unsigned long mask = 1UL << node;
    if (sys_mbind(a, len, 2 /* MPOL_BIND */, &mask, 64, 0) != 0) {
        outf(out, "err=%d", errno);
        return;
    }
    if (populate)
        for (unsigned long i = 0; i < npages; i += (order == 9 ? 512 : 1))
            *(volatile char *)(a + i * PAGE) = 0;
    reg[r].addr = a;
    reg[r].npages = npages;
    reg[r].mapped = 1;
    reg[r].fd = shared ? memfds[r] : -1;
    outf(out, "addr=%lu", (unsigned long)a);
}

static void do_share(char *out, int r, unsigned long first, unsigned long npages)
{
    char *a = map_aligned(memfds[r], npages * PAGE, first * PAGE, 64UL << 10);
    if (a == MAP_FAILED) { outf(out, "err=%d", errno); return; }
    reg[r].addr = a - first * PAGE; /* so that page i of the region is addr + i * PAGE */
    reg[r].npages = first + npages;
    reg[r].mapped = 1;
    reg[r].fd = memfds[r];
    outf(out, "addr=%lu", (unsigned long)reg[r].addr);
}

static void do_pin(char *out, int r, unsigned long page)
{
    int fds[2];
    if (npins >= MAXPIN || pipe(fds) != 0) { outf(out, "err=%d", errno); return; }
    struct iovec iov = { reg[r].addr + page * PAGE, PAGE };
    if (vmsplice(fds[1], &iov, 1, 0) != (ssize_t)PAGE) { outf(out, "err=%d", errno); return; }
    pins[npins][0] = r; pins[npins][1] = (int)page; pins[npins][2] = fds[0];
    close(fds[1]);
    npins++;
    outf(out, "ok");
}

static void do_unpin(char *out, int r, unsigned long page)
{
    for (int i = 0; i < npins; i++)
        if (pins[i][0] == r && pins[i][1] == (int)page && pins[i][2] >= 0) {
            close(pins[i][2]);
            pins[i][2] = -1;
            outf(out, "ok");
            return;
        }
    outf(out, "err=%d", ENOENT);
}

static void do_move(char *out, char *args)
{
    int pid, flags, query;
    unsigned long n;
    int used;
    sscanf(args, "%d %d %d %lu%n", &pid, &flags, &query, &n, &used);
    args += used;
    void **pages = calloc(n + 1, sizeof(void *));
    int *nodes = calloc(n + 1, sizeof(int));
    int *status = calloc(n + 1, sizeof(int));
    for (unsigned long i = 0; i < n; i++) {
        unsigned long addr;
        int node;
        sscanf(args, "%lu %d%n", &addr, &node, &used);
        args += used;
        pages[i] = (void *)addr;
        nodes[i] = node;
        status[i] = 12345; /* left as it was: the kernel wrote nothing there */
    }
    long ret = sys_move_pages(pid, n, pages, query ? NULL : nodes, status, flags);
    outf(out, "ret=%ld errno=%d status=", ret, ret < 0 ? errno : 0);
    for (unsigned long i = 0; i < n; i++)
        outf(out, i ? ",%d" : "%d", status[i]);
    free(pages); free(nodes); free(status);
}

/*
 * The pages of this process that are not the scenario's (its stack, heap, data, the
 * mailbox), per node, from /proc/self/numa_maps: migrate_pages moves them too, so the
 * leader counts them before and after and reports how many left their node.
 */
static void do_harness(char *out)
{
    unsigned long per[MAXNODE] = {0};
    FILE *f = fopen("/proc/self/numa_maps", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start = strtoul(line, NULL, 16);
        int ours = 0;
        for (int r = 0; r < MAXR; r++)
            if (reg[r].addr && start >= (unsigned long)reg[r].addr &&
                start < (unsigned long)reg[r].addr + reg[r].npages * PAGE)
                ours = 1;
        if (ours)
            continue;
        for (char *t = strtok(line, " \n"); t; t = strtok(NULL, " \n")) {
            int node;
            unsigned long n;
            if (sscanf(t, "N%d=%lu", &node, &n) == 2 && node >= 0 && node < MAXNODE)
                per[node] += n;
        }
    }
    if (f)
        fclose(f);
    for (int i = 0; i < MAXNODE; i++)
        outf(out, i ? ",%lu" : "h=%lu", per[i]);
}

static void do_migrate(char *out, char *args)
{
    int pid;
    unsigned long old, new;
    sscanf(args, "%d %lu %lu", &pid, &old, &new);
    long ret = sys_migrate_pages(pid, 64, &old, &new);
    outf(out, "ret=%ld errno=%d", ret, ret < 0 ? errno : 0);
}

static unsigned long anon_huge_kb(char *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    unsigned long kb = 0, lo, hi;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = (unsigned long)addr >= lo && (unsigned long)addr < hi;
        else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
            break;
    }
    fclose(f);
    return in ? kb : 0;
}

static void do_observe(char *out, int r, unsigned long first, unsigned long npages, int bytes)
{
    /* where every page is (a query), then a hash of its bytes, then THP kB */
    void **pages = calloc(npages, sizeof(void *));
    int *status = calloc(npages, sizeof(int));
    for (unsigned long i = 0; i < npages; i++)
        pages[i] = reg[r].addr + (first + i) * PAGE;
    sys_move_pages(0, npages, pages, NULL, status, 0);
    outf(out, "where=");
    for (unsigned long i = 0; i < npages; i++)
        outf(out, i ? ",%d" : "%d", status[i]);
    outf(out, " thp_kb=%lu", anon_huge_kb(reg[r].addr + first * PAGE));
    if (bytes) {
        outf(out, " hash=");
        for (unsigned long i = 0; i < npages; i++)
            outf(out, i ? ",%u" : "%u", page_hash((unsigned char *)reg[r].addr + (first + i) * PAGE));
    }
    free(pages); free(status);
}

static void serve(int k);

static void run_cmd(int k, char *cmd, char *out)
{
    char op[32];
    int used;
    out[0] = 0;
    sscanf(cmd, "%31s%n", op, &used);
    char *args = cmd + used;
    int r, a, b, c, d;
    unsigned long x, y;
    if (!strcmp(op, "mmap")) {
        sscanf(args, "%d %lu %d %d %d %d", &r, &x, &a, &b, &c, &d);
        do_mmap(out, r, x, a, b, c, d);
    } else if (!strcmp(op, "fill")) {
        /* a region that leaves LEAVE pages free on NODE */
        char path[96], line[256];
        unsigned long kb = 0;
        sscanf(args, "%d %d %lu", &r, &a, &x);
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d/meminfo", a);
        FILE *mf = fopen(path, "r");
        while (mf && fgets(line, sizeof line, mf))
            if (strstr(line, "MemFree:"))
                sscanf(strstr(line, "MemFree:") + 8, "%lu", &kb);
        if (mf) fclose(mf);
        unsigned long np = kb / 4 > x ? kb / 4 - x : 1;
        do_mmap(out, r, np, 0, 1, 0, a);
        outf(out, " pages=%lu", np);
    } else if (!strcmp(op, "share")) {
        sscanf(args, "%d %lu %lu", &r, &x, &y);
        do_share(out, r, x, y);
    } else if (!strcmp(op, "write")) {
        sscanf(args, "%d %lu %lu", &r, &x, &y);
        fill(reg[r].addr + x * PAGE, y, x);
        outf(out, "ok");
    } else if (!strcmp(op, "read")) {
        sscanf(args, "%d %lu", &r, &x);
        volatile char c0 = *(volatile char *)(reg[r].addr + x * PAGE);
        (void)c0;
        outf(out, "ok");
    } else if (!strcmp(op, "pin")) {
        sscanf(args, "%d %lu", &r, &x);
        do_pin(out, r, x);
    } else if (!strcmp(op, "unpin")) {
        sscanf(args, "%d %lu", &r, &x);
        do_unpin(out, r, x);
    } else if (!strcmp(op, "munmap")) {
        sscanf(args, "%d %lu %lu", &r, &x, &y);
        outf(out, munmap(reg[r].addr + x * PAGE, y * PAGE) ? "err=%d" : "ok", errno);
    } else if (!strcmp(op, "move")) {
        do_move(out, args);
    } else if (!strcmp(op, "migrate")) {
        do_migrate(out, args);
    } else if (!strcmp(op, "observe")) {
        sscanf(args, "%d %lu %lu %d", &r, &x, &y, &a);
        do_observe(out, r, x, y, a);
    } else if (!strcmp(op, "fork")) {
        sscanf(args, "%d", &a);
        box->s[a].alive = 0;
        pid_t pid = fork();
        if (pid == 0) {
            self_slot = a;
            box->s[a].pid = getpid();
            box->s[a].alive = 1;
            serve(a);
            _exit(0);
        }
        while (!box->s[a].alive)
            sched_yield();
        outf(out, "pid=%d", pid);
    } else if (!strcmp(op, "exit")) {
        outf(out, "ok");
    } else if (!strcmp(op, "harness")) {
        do_harness(out);
    } else if (!strcmp(op, "dumpable")) {
        sscanf(args, "%d", &a);
        outf(out, prctl(PR_SET_DUMPABLE, a) ? "err=%d" : "ok", errno);
    } else {
        outf(out, "err=unknown-op");
    }
    (void)k;
}

static void serve(int k)
{
    struct slot *s = &box->s[k];
    for (;;) {
        while (s->seq == s->done)
            usleep(20);
        const char *c = s->cmd;
        while (*c == ' ')
            c++;
        int stop = !strncmp(c, "exit", 4);
        run_cmd(k, s->cmd, s->out);
        __sync_synchronize();
        s->done = s->seq;
        if (stop)
            _exit(0);
    }
}

static const char *ask(int k, const char *fmt, ...)
{
    struct slot *s = &box->s[k];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->cmd, CMDSZ, fmt, ap);
    va_end(ap);
    __sync_synchronize();
    s->seq++;
    for (int spins = 0; s->done != s->seq; spins++) {
        usleep(20);
        if (spins > 500000) /* 10 s */
            return "err=timeout";
    }
    return s->out;
}

static int set_creds(int uid, int nice, int ptrace_cap)
{
    if (uid == 0)
        return 0;
    prctl(PR_SET_KEEPCAPS, 1);
    if (setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
        return -1;
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (nice) d[0].effective |= 1u << CAP_SYS_NICE;
    if (ptrace_cap) d[0].effective |= 1u << CAP_SYS_PTRACE;
    d[0].permitted = d[0].effective;
    if (syscall(SYS_capset, &h, d))
        return -1;
    prctl(PR_SET_DUMPABLE, 1); /* a setuid process is not dumpable: undo, as a plain one */
    return 0;
}

static void vmstat(unsigned long v[5])
{
    static const char *keys[5] = { "pgmigrate_success", "pgmigrate_fail",
        "thp_migration_success", "thp_migration_fail", "thp_migration_split" };
    char name[64];
    unsigned long val;
    memset(v, 0, 5 * sizeof v[0]);
    FILE *f = fopen("/proc/vmstat", "r");
    if (!f) return;
    while (fscanf(f, "%63s %lu", name, &val) == 2)
        for (int i = 0; i < 5; i++)
            if (!strcmp(name, keys[i]))
                v[i] = val;
    fclose(f);
}

static unsigned long base[MAXP][MAXR]; /* the leader's map: slot, region -> address */

/* the pid of slot T: 0 (the caller) for -1, a pid no process has for T >= MAXP */
static int pidof(int t)
{
    return t < 0 ? 0 : t >= MAXP ? 999999 : box->s[t].pid;
}

/*
 * One step for server K. Regions and processes in the script are names (numbers);
 * here they become addresses and pids: "move T FLAGS QUERY N R:P:NODE..." (T: the
 * target slot, -1 for the server itself; R:P a region's page, U an unmapped address)
 * and "migrate T OLDMASK NEWMASK". The leader learns addresses from the answers.
 */
static char buf[CMDSZ];

/* Slot K's harness pages per node (the "harness" op). */
static void harness_pages(int k, unsigned long *per)
{
    const char *ans = ask(k, "harness");
    const char *p = strstr(ans, "h=");
    for (int i = 0; p && i < MAXNODE; i++) {
        p += i ? 1 : 2;
        per[i] = strtoul(p, (char **)&p, 10);
    }
}

static const char *on(int k, const char *step)
{
    char op[32];
    int used, t, r, j;
    sscanf(step, "%31s%n", op, &used);
    if (!strcmp(op, "move")) {
        int flags, query;
        unsigned long n;
        const char *p = step + used;
        sscanf(p, "%d %d %d %lu%n", &t, &flags, &query, &n, &used);
        p += used;
        int slot = t < 0 || t >= MAXP ? k : t;
        char *d = buf + sprintf(buf, "move %d %d %d %lu", pidof(t), flags, query, n);
        for (unsigned long i = 0; i < n && d < buf + CMDSZ - 64; i++) {
            char tok[64];
            int node;
            unsigned long pg;
            sscanf(p, "%63s%n", tok, &used);
            p += used;
            if (tok[0] == 'U') {
                sscanf(tok, "U:%d", &node);
                d += sprintf(d, " %lu %d", 0x10000UL, node);
            } else if (tok[0] == 'A') {
                unsigned long raw;
                sscanf(tok, "A:%lu:%d", &raw, &node);
                d += sprintf(d, " %lu %d", raw, node);
            } else {
                sscanf(tok, "%d:%lu:%d", &r, &pg, &node);
                d += sprintf(d, " %lu %d", base[slot][r] + pg * PAGE, node);
            }
        }
        return ask(k, "%s", buf);
    }
    if (!strcmp(op, "migrate")) {
        unsigned long o, nw;
        sscanf(step + used, "%d %lu %lu", &t, &o, &nw);
        int tt = t < 0 ? k : t; /* the slot whose harness pages may move */
        int count = tt < MAXP && box->s[tt].alive;
        unsigned long h0[MAXNODE] = {0}, h1[MAXNODE] = {0}, moved = 0;
        if (count) {
            /* once to settle: the count's own first writes (copy-on-write breaks of
               pages shared with the leader since the fork) must not fall between */
            harness_pages(tt, h0);
            harness_pages(tt, h0);
        }
        snprintf(buf, sizeof buf, "%s", ask(k, "migrate %d %lu %lu", pidof(t), o, nw));
        if (count && strncmp(buf, "ret=-", 5)) {
            /* a page moved leaves one node and arrives on another: a page freed or
               faulted in meanwhile changes one side only */
            unsigned long gone = 0, came = 0;
            harness_pages(tt, h1);
            for (int i = 0; i < MAXNODE; i++) {
                gone += h0[i] > h1[i] ? h0[i] - h1[i] : 0;
                came += h1[i] > h0[i] ? h1[i] - h0[i] : 0;
            }
            moved = gone < came ? gone : came;
            snprintf(buf + strlen(buf), 64, " harness=%lu", moved);
        }
        return buf;
    }
    const char *ans = ask(k, "%s", step);
    unsigned long a;
    if (!strcmp(op, "exit")) {
        /* the answer comes before the exit: wait until the kernel shows a zombie */
        char path[64], st[256];
        snprintf(path, sizeof path, "/proc/%d/stat", box->s[k].pid);
        for (int tries = 0; tries < 20000; tries++) {
            FILE *f = fopen(path, "r");
            size_t m = f ? fread(st, 1, sizeof st - 1, f) : 0;
            if (f) fclose(f);
            st[m] = 0;
            char *rp = strrchr(st, ')');
            if (!f || (rp && (rp[2] == 'Z' || rp[2] == 'X')))
                break;
            usleep(50);
        }
        box->s[k].alive = 0;
        return ans;
    }
    if ((!strcmp(op, "mmap") || !strcmp(op, "share") || !strcmp(op, "fill")) &&
        sscanf(step + used, "%d", &r) == 1 &&
        sscanf(ans, "addr=%lu", &a) == 1)
        base[k][r] = a;
    if (!strcmp(op, "fork") && sscanf(step + used, "%d", &j) == 1)
        memcpy(base[j], base[k], sizeof base[k]);
    return ans;
}

/* The leader: runs the lines of one scenario (they reference servers by slot). */
static void lead(char **lines, int n, const char *name)
{
    unsigned long v0[5], v1[5];
    box = mmap(NULL, sizeof *box, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < MAXR; i++) memfds[i] = -1;
    for (int i = 0; i < n; i++) {
        int r; unsigned long np;
        if (sscanf(lines[i], "memfd %d %lu", &r, &np) == 2) {
            memfds[r] = memfd_create("kcheck", 0);
            memfd_pages[r] = np;
            if (ftruncate(memfds[r], np * PAGE)) {}
        }
    }
    vmstat(v0);
    for (int i = 0; i < n; i++) {
        char *l = lines[i];
        int k, uid, nice, ptr;
        if (!strncmp(l, "memfd", 5))
            continue;
        if (sscanf(l, "spawn %d %d %d %d", &k, &uid, &nice, &ptr) == 4) {
            box->s[k].alive = 0;
            pid_t pid = fork();
            if (pid == 0) {
                self_slot = k;
                if (set_creds(uid, nice, ptr)) {
                    printf("KC %s %d err=creds\n", name, i);
                    _exit(1);
                }
                box->s[k].pid = getpid();
                box->s[k].alive = 1;
                serve(k);
            }
            while (!box->s[k].alive)
                usleep(50);
            printf("KC %s %d pid=%d\n", name, i, pid);
            continue;
        }
        if (sscanf(l, "on %d%n", &k, &uid) == 1) {
            const char *ans = on(k, l + uid);
            printf("KC %s %d %s\n", name, i, ans);
            fflush(stdout);
            continue;
        }
        if (!strncmp(l, "show ", 5)) {
            char buf[512] = "";
            FILE *sf = fopen(l + 5, "r");
            if (sf) {
                size_t m = fread(buf, 1, sizeof buf - 1, sf);
                buf[m] = 0;
                fclose(sf);
                for (char *c = buf; *c; c++)
                    if (*c == '\n') *c = ' ';
            }
            printf("KC %s %d show=%s\n", name, i, buf);
            continue;
        }
        if (!strncmp(l, "vmstat", 6)) {
            vmstat(v1);
            printf("KC %s %d vmstat=%lu,%lu,%lu,%lu,%lu\n", name, i, v1[0] - v0[0],
                   v1[1] - v0[1], v1[2] - v0[2], v1[3] - v0[3], v1[4] - v0[4]);
            continue;
        }
        printf("KC %s %d err=bad-line\n", name, i);
    }
    fflush(stdout);
    for (int k = 0; k < MAXP; k++)
        if (box->s[k].alive) {
            kill(box->s[k].pid, SIGKILL);
            waitpid(box->s[k].pid, NULL, 0);
        }
}

int main(int argc, char **argv)
{
    int as_init = getpid() == 1;
    if (as_init) {
        mkdir("/proc", 0755); mkdir("/sys", 0755);
        mount("proc", "/proc", "proc", 0, NULL);
        mount("sysfs", "/sys", "sysfs", 0, NULL);
        /* a guest under 512 MiB starts with THP off; the scenarios want "madvise" */
        const char *thp[2][2] = {{"/sys/kernel/mm/transparent_hugepage/enabled", "madvise"},
                                 {"/sys/kernel/mm/transparent_hugepage/defrag", "madvise"}};
        for (int i = 0; i < 2; i++) {
            FILE *tf = fopen(thp[i][0], "w");
            if (tf) { fputs(thp[i][1], tf); fclose(tf); }
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *path = argc > 1 ? argv[1] : "/scenarios.txt";
    FILE *f = fopen(path, "r");
    if (!f) { printf("KC - - err=no-script\n"); goto done; }
    static char text[1 << 22];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    printf("KC - - start\n");
    char *lines[4096];
    int n = 0;
    char name[128] = "";
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        if (!strncmp(l, "scenario ", 9)) {
            snprintf(name, sizeof name, "%s", l + 9);
            n = 0;
        } else if (!strcmp(l, "end")) {
            pid_t pid = fork();
            if (pid == 0) {
                alarm(60);
                lead(lines, n, name);
                _exit(0);
            }
            int st;
            waitpid(pid, &st, 0);
            printf("KC %s - done=%d\n", name, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            fflush(stdout);
        } else if (n < 4096) {
            lines[n++] = l;
        }
    }
    printf("KC - - finished\n");
done:
    fflush(stdout);
    if (as_init) {
        sync();
        reboot(RB_POWER_OFF);
    }
    return 0;
}
