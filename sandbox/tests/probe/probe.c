/* The sandbox probe: runs as the builder inside bramble-sandbox and asserts isolation from
 * within. Built static (gcc -static -O2) so it needs nothing from the sandbox.
 *
 * usage: probe <check> [args...]; exit 0 and print "ok" when every assertion holds, else
 * print "FAIL: ..." lines on stderr and exit 1. Some checks (exit, signal, sleep, daemon)
 * exist to give the host side something to observe. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static int failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                             \
            fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));                      \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static int read_file(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

/* The host id `inside` maps to in the id map `path` (-1 if none); `lines` gets the count. */
static long long mapped_to(const char *path, unsigned inside, int *lines) {
    char buf[512];
    long long host = -1;
    *lines = 0;
    if (read_file(path, buf, sizeof buf) <= 0) return -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned a, b, c;
        (*lines)++;
        if (sscanf(line, "%u %u %u", &a, &b, &c) == 3 && a == inside && c == 1) host = b;
    }
    return host;
}

/* Whether `want` ("<id>", or "sandbox": an id of bramble's range for builders of a root
 * caller, see sandbox/src/ids.rs) accepts the host id `host`. */
static int host_id_ok(const char *want, long long host) {
    if (!strcmp(want, "sandbox")) return host >= 880803840LL && host < 880803840LL + (1 << 22);
    return host == atoll(want);
}

/* ids <host uid> <host gid>: uid 1000 and gid 100 inside (real, effective, saved and
 * filesystem ids), mapped to the given host ids: the caller's own in a single-id map, or
 * `sandbox` (the caller is root): an unprivileged id of bramble's range, root's own id
 * mapped as 0 for the helper's setup only. setgroups denied, setuid(0) refused. */
static void check_ids(char **argv) {
    char buf[4096];
    int sandbox = !strcmp(argv[0], "sandbox");
    CHECK(getuid() == 1000 && geteuid() == 1000, "uid is %d, want 1000", getuid());
    CHECK(getgid() == 100 && getegid() == 100, "gid is %d, want 100", getgid());
    CHECK(read_file("/proc/self/status", buf, sizeof buf) > 0, "read status");
    char *uids = strstr(buf, "\nUid:"), *gids = strstr(buf, "\nGid:");
    unsigned r, e, s, f;
    CHECK(uids && sscanf(uids + 5, "%u %u %u %u", &r, &e, &s, &f) == 4 && r == 1000 && e == 1000 &&
              s == 1000 && f == 1000,
          "not every uid is 1000");
    CHECK(gids && sscanf(gids + 5, "%u %u %u %u", &r, &e, &s, &f) == 4 && r == 100 && e == 100 &&
              s == 100 && f == 100,
          "not every gid is 100");
    int lines;
    long long host = mapped_to("/proc/self/uid_map", 1000, &lines);
    CHECK(host_id_ok(argv[0], host), "uid 1000 maps to host %lld, want %s", host, argv[0]);
    CHECK(host != 0, "the builder is host root");
    CHECK(lines == 1 + sandbox, "uid_map has %d lines", lines);
    if (sandbox) CHECK(mapped_to("/proc/self/uid_map", 0, &lines) == 0, "root's id is not 0");
    long long ghost = mapped_to("/proc/self/gid_map", 100, &lines);
    CHECK(host_id_ok(argv[1], ghost), "gid 100 maps to host %lld, want %s", ghost, argv[1]);
    CHECK(!sandbox || ghost == host, "gid %lld and uid %lld differ", ghost, host);
    CHECK(lines == 1 + sandbox, "gid_map has %d lines", lines);
    CHECK(read_file("/proc/self/setgroups", buf, sizeof buf) > 0 && strncmp(buf, "deny", 4) == 0,
          "setgroups is `%s`, want deny", buf);
    CHECK(!sandbox || getgroups(0, NULL) == 0, "root's supplementary groups are kept");
    CHECK(setuid(0) != 0, "setuid(0) succeeded");
    CHECK(setresuid(0, 0, 0) != 0, "setresuid(0) succeeded");
    CHECK(setgid(0) != 0, "setgid(0) succeeded");
}

/* absent PATH...: none of the paths exists. */
static void check_absent(char **argv) {
    struct stat st;
    for (; *argv; argv++) CHECK(lstat(*argv, &st) != 0 && errno == ENOENT, "`%s` exists", *argv);
}

/* root-entries NAME...: `/` holds exactly these entries. */
static void check_root_entries(char **argv) {
    int want = 0, got = 0;
    for (char **a = argv; *a; a++) want++;
    DIR *d = opendir("/");
    CHECK(d != NULL, "opendir /");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int found = 0;
        for (char **a = argv; *a; a++) found |= !strcmp(*a, e->d_name);
        CHECK(found, "unexpected `/%s`", e->d_name);
        got++;
    }
    closedir(d);
    CHECK(got == want, "/ has %d entries, want %d", got, want);
    /* The root itself is read-only. */
    CHECK(mkdir("/newdir", 0755) != 0 && errno == EROFS, "mkdir in / did not fail with EROFS");
}

static void create_in(const char *dir, int want_errno) {
    char path[4096];
    snprintf(path, sizeof path, "%s/probe-created", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (want_errno == 0) {
        CHECK(fd >= 0 && write(fd, "ok", 2) == 2, "cannot write into `%s`", dir);
    } else {
        CHECK(fd < 0 && errno == want_errno, "creating in `%s`: want errno %d", dir, want_errno);
    }
    if (fd >= 0) close(fd);
}

/* readonly DIR...: read-only, nosuid, nodev mounts; readable. */
static void check_readonly(char **argv) {
    for (; *argv; argv++) {
        struct statvfs sv;
        CHECK(statvfs(*argv, &sv) == 0, "statvfs `%s`", *argv);
        CHECK(sv.f_flag & ST_RDONLY, "`%s` is not read-only", *argv);
        CHECK(sv.f_flag & ST_NOSUID, "`%s` is not nosuid", *argv);
        CHECK(sv.f_flag & ST_NODEV, "`%s` is not nodev", *argv);
        create_in(*argv, EROFS);
        CHECK(access(*argv, R_OK | X_OK) == 0, "`%s` is not readable", *argv);
    }
}

/* writable DIR...: writable, nosuid, nodev. */
static void check_writable(char **argv) {
    for (; *argv; argv++) {
        struct statvfs sv;
        CHECK(statvfs(*argv, &sv) == 0, "statvfs `%s`", *argv);
        CHECK(!(sv.f_flag & ST_RDONLY), "`%s` is read-only", *argv);
        CHECK(sv.f_flag & ST_NOSUID, "`%s` is not nosuid", *argv);
        CHECK(sv.f_flag & ST_NODEV, "`%s` is not nodev", *argv);
        create_in(*argv, 0);
    }
}

/* write-file PATH TEXT: creates PATH (e.g. $out) holding TEXT. */
static void write_path(char **argv) {
    int fd = open(argv[0], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    CHECK(fd >= 0, "create `%s`", argv[0]);
    if (fd >= 0) {
        CHECK(write(fd, argv[1], strlen(argv[1])) == (ssize_t)strlen(argv[1]), "write");
        close(fd);
    }
}

/* net-tcp PORT ok|refused: connecting to 127.0.0.1:PORT. */
static void check_tcp(char **argv) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[0]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(s, (struct sockaddr *)&sa, sizeof sa);
    if (!strcmp(argv[1], "ok"))
        CHECK(r == 0, "cannot reach 127.0.0.1:%s", argv[0]);
    else
        CHECK(r != 0 && errno == ECONNREFUSED, "127.0.0.1:%s reachable or not refused", argv[0]);
    close(s);
}

/* net-unix NAME: the host's abstract socket @NAME is unreachable. */
static void check_unix(char **argv) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(argv[0]);
    memcpy(sa.sun_path + 1, argv[0], n);
    int r = connect(s, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + 1 + n);
    CHECK(r != 0 && errno == ECONNREFUSED, "abstract socket @%s reachable", argv[0]);
    close(s);
}

/* net-ifaces: only `lo`, and it is up. */
static void check_ifaces(char **argv) {
    (void)argv;
    struct if_nameindex *ifs = if_nameindex();
    CHECK(ifs != NULL, "if_nameindex");
    if (!ifs) return;
    int n = 0;
    for (struct if_nameindex *i = ifs; i->if_index; i++, n++)
        CHECK(!strcmp(i->if_name, "lo"), "unexpected interface `%s`", i->if_name);
    CHECK(n == 1, "%d interfaces, want 1", n);
    if_freenameindex(ifs);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    CHECK(ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP), "lo is not up");
    close(s);
}

/* pids: the builder is pid 2, its parent is pid 1, /proc shows nothing else. */
static void check_pids(char **argv) {
    (void)argv;
    CHECK(getpid() == 2, "pid is %d, want 2", getpid());
    CHECK(getppid() == 1, "parent is %d, want 1", getppid());
    DIR *d = opendir("/proc");
    CHECK(d != NULL, "opendir /proc");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid > 0) CHECK(pid == 1 || pid == 2, "foreign process %d visible", pid);
    }
    closedir(d);
}

/* caps: every capability set is empty; no_new_privs and seccomp are on. */
static void check_caps(char **argv) {
    (void)argv;
    char buf[4096];
    CHECK(read_file("/proc/self/status", buf, sizeof buf) > 0, "read status");
    const char *keys[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char *p = strstr(buf, keys[i]);
        CHECK(p && strtoull(p + strlen(keys[i]), NULL, 16) == 0, "%s not empty", keys[i]);
    }
    CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs is not set");
    char *p = strstr(buf, "Seccomp:");
    CHECK(p && atoi(p + 8) == 2, "seccomp is not in filter mode");
}

/* chmod DIR: setuid/setgid modes fail with EPERM through every chmod syscall. */
static void check_chmod(char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/setid", argv[0]);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    CHECK(fd >= 0, "create `%s`", path);
    int modes[] = {04755, 02755, 06755, 04000, 02000};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        errno = 0;
        CHECK(chmod(path, modes[i]) == -1 && errno == EPERM, "chmod %o not EPERM", modes[i]);
        errno = 0;
        CHECK(fchmod(fd, modes[i]) == -1 && errno == EPERM, "fchmod %o not EPERM", modes[i]);
        errno = 0;
        CHECK(fchmodat(AT_FDCWD, path, modes[i], 0) == -1 && errno == EPERM,
              "fchmodat %o not EPERM", modes[i]);
        errno = 0;
        CHECK(syscall(452 /* fchmodat2 */, AT_FDCWD, path, modes[i], 0) == -1 &&
                  (errno == EPERM || errno == ENOSYS),
              "fchmodat2 %o not EPERM", modes[i]);
        /* High bits above the 32-bit mode must not smuggle the bits past the filter. */
        errno = 0;
        CHECK(syscall(SYS_fchmod, fd, 0x100000000UL | modes[i]) == -1 && errno == EPERM,
              "fchmod with high bits %o not EPERM", modes[i]);
    }
#ifdef __x86_64__
    /* x32 ABI: the same chmod through the x32 syscall bit must not work. */
    errno = 0;
    CHECK(syscall(0x40000000 | SYS_chmod, path, 04755) == -1, "x32 chmod succeeded");
#endif
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && !(st.st_mode & 06000), "mode has setid bits: %o", st.st_mode);
    CHECK(chmod(path, 0700) == 0, "plain chmod 0700 failed");
    CHECK(fchmod(fd, 01777) == 0, "plain fchmod 01777 failed");
    close(fd);
}

/* xattr DIR: every xattr write fails with ENOTSUP; reads still work. */
static void check_xattr(char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/xattr", argv[0]);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    CHECK(fd >= 0, "create `%s`", path);
    errno = 0;
    CHECK(setxattr(path, "user.bramble", "x", 1, 0) == -1 && errno == ENOTSUP, "setxattr");
    errno = 0;
    CHECK(lsetxattr(path, "user.bramble", "x", 1, 0) == -1 && errno == ENOTSUP, "lsetxattr");
    errno = 0;
    CHECK(fsetxattr(fd, "user.bramble", "x", 1, 0) == -1 && errno == ENOTSUP, "fsetxattr");
    errno = 0;
    CHECK(removexattr(path, "user.bramble") == -1 && errno == ENOTSUP, "removexattr");
    errno = 0;
    CHECK(fremovexattr(fd, "user.bramble") == -1 && errno == ENOTSUP, "fremovexattr");
    close(fd);
}

/* Sets up an io_uring of 4 entries, submits one operation prepared by `prep`, waits for it
 * and returns its result (the completion's `res`), or minus the errno of the setup or enter.
 * In the sandbox the probe cannot get a ring: io_uring_setup fails (the seccomp filter
 * refuses it with EPERM), so this returns -EPERM before submitting anything. The submission
 * is written out all the same, so that a sandbox which let a ring through would have each
 * operation really tried through it, not assumed refused. */
static int uring_submit(void (*prep)(struct io_uring_sqe *, void *), void *arg) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return -errno;
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    int prot = PROT_READ | PROT_WRITE, flags = MAP_SHARED | MAP_POPULATE;
    char *sq = mmap(NULL, sq_len, prot, flags, fd, IORING_OFF_SQ_RING);
    char *cq = mmap(NULL, cq_len, prot, flags, fd, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(NULL, sqes_len, prot, flags, fd, IORING_OFF_SQES);
    int res = -ENOMEM;
    if (sq != MAP_FAILED && cq != MAP_FAILED && sqes != MAP_FAILED) {
        unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
        unsigned idx = *tail & *(unsigned *)(sq + p.sq_off.ring_mask);
        memset(&sqes[idx], 0, sizeof sqes[idx]);
        prep(&sqes[idx], arg);
        ((unsigned *)(sq + p.sq_off.array))[idx] = idx;
        __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
        if (syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
            res = -errno;
        } else {
            unsigned head = __atomic_load_n((unsigned *)(cq + p.cq_off.head), __ATOMIC_ACQUIRE);
            struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
            res = cqes[head & *(unsigned *)(cq + p.cq_off.ring_mask)].res;
        }
    }
    if (sq != MAP_FAILED) munmap(sq, sq_len);
    if (cq != MAP_FAILED) munmap(cq, cq_len);
    if (sqes != MAP_FAILED) munmap(sqes, sqes_len);
    close(fd);
    return res;
}

struct xattr_op {
    const char *path;
    int fd;
};

static void prep_setxattr(struct io_uring_sqe *sqe, void *arg) {
    struct xattr_op *op = arg;
    sqe->opcode = IORING_OP_SETXATTR;
    sqe->addr = (unsigned long)"user.bramble";
    sqe->addr2 = (unsigned long)"x";
    sqe->addr3 = (unsigned long)op->path;
    sqe->len = 1;
}

static void prep_fsetxattr(struct io_uring_sqe *sqe, void *arg) {
    struct xattr_op *op = arg;
    sqe->opcode = IORING_OP_FSETXATTR;
    sqe->fd = op->fd;
    sqe->addr = (unsigned long)"user.bramble";
    sqe->addr2 = (unsigned long)"x";
    sqe->len = 1;
}

/* io-uring DIR: io_uring is refused (io_uring_setup, _enter and _register fail with EPERM,
 * as with the kernel's `io_uring_disabled`), and every operation the seccomp filter refuses
 * as a system call that io_uring can also do (SETXATTR, FSETXATTR) is attempted through a
 * ring too, and fails. */
static void check_io_uring(char **argv) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    errno = 0;
    CHECK(syscall(__NR_io_uring_setup, 4, &p) == -1 && errno == EPERM,
          "io_uring_setup not refused with EPERM");
    errno = 0;
    CHECK(syscall(__NR_io_uring_enter, -1, 0, 0, 0, NULL, 0) == -1 && errno == EPERM,
          "io_uring_enter not refused with EPERM");
    errno = 0;
    CHECK(syscall(__NR_io_uring_register, -1, 0, NULL, 0) == -1 && errno == EPERM,
          "io_uring_register not refused with EPERM");
    char path[4096];
    snprintf(path, sizeof path, "%s/uring-xattr", argv[0]);
    struct xattr_op op = {.path = path, .fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)};
    CHECK(op.fd >= 0, "create `%s`", path);
    int r = uring_submit(prep_setxattr, &op);
    CHECK(r == -EPERM, "IORING_OP_SETXATTR through io_uring: %d, want -EPERM", r);
    r = uring_submit(prep_fsetxattr, &op);
    CHECK(r == -EPERM, "IORING_OP_FSETXATTR through io_uring: %d, want -EPERM", r);
    char value[8];
    errno = 0;
    CHECK(getxattr(path, "user.bramble", value, sizeof value) == -1, "the xattr was set");
    close(op.fd);
}

/* tiocsti: a pty of our own, made our controlling terminal, still refuses TIOCSTI. */
static void check_tiocsti(char **argv) {
    (void)argv;
    signal(SIGHUP, SIG_IGN); /* closing the master hangs up our controlling terminal */
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(m >= 0, "posix_openpt");
    if (m < 0) return;
    CHECK(grantpt(m) == 0 && unlockpt(m) == 0, "unlockpt");
    char *name = ptsname(m);
    int s = open(name, O_RDWR | O_CLOEXEC); /* session leader without a tty: becomes ctty */
    CHECK(s >= 0, "open `%s`", name);
    char c = 'x';
    errno = 0;
    CHECK(ioctl(s, TIOCSTI, &c) == -1, "TIOCSTI succeeded");
    errno = 0;
    CHECK(syscall(SYS_ioctl, s, 0x100000000UL | TIOCSTI, &c) == -1,
          "TIOCSTI with high bits succeeded");
    close(s);
    close(m);
}

/* foreign-arch: an i386 syscall kills the process; an x32 one fails. */
static void check_foreign_arch(char **argv) {
    (void)argv;
#ifdef __x86_64__
    pid_t pid = fork();
    if (pid == 0) {
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20) /* i386 getpid */ : "memory");
        _exit(ret > 0 ? 0 : 3);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
          "i386 syscall was not killed by SIGSYS (status %x)", status);
    errno = 0;
    CHECK(syscall(0x40000000 | SYS_getpid) == -1 && errno == ENOSYS, "x32 getpid not ENOSYS");
#endif
}

/* proc: the fresh /proc protects what bubblewrap and runc protect. Global sysctls cannot be
 * opened for writing (read-only mount: EROFS; a sysctl that did open is written back with
 * the value it had, so a failing run changes nothing; EACCES for a builder that does not own
 * them, EROFS for one that does); sys, sysrq-trigger, irq, bus and fs
 * are read-only mounts; kernel memory, the kernel log, keys, timer and scheduler internals
 * are masked (a `nodev` /dev/null or an empty directory) where the kernel has them. */
static void check_proc(char **argv) {
    (void)argv;
    const char *sysctls[] = {"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
                             "/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/hostname",
                             "/proc/sys/fs/file-max", "/proc/sys/net/ipv4/ip_forward"};
    for (size_t i = 0; i < sizeof sysctls / sizeof *sysctls; i++) {
        char old[4096];
        int n = read_file(sysctls[i], old, sizeof old);
        if (n < 0 && errno == ENOENT) continue;
        CHECK(n >= 0, "cannot read `%s`", sysctls[i]);
        errno = 0;
        int fd = open(sysctls[i], O_WRONLY | O_CLOEXEC);
        CHECK(fd < 0 && (errno == EROFS || errno == EACCES), "`%s` opened for writing",
              sysctls[i]);
        if (fd >= 0) {
            if (n > 0 && write(fd, old, n) != n) fprintf(stderr, "cannot restore `%s`\n", sysctls[i]);
            close(fd);
        }
    }
    const char *ro[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"};
    for (size_t i = 0; i < sizeof ro / sizeof *ro; i++) {
        struct statvfs sv;
        if (statvfs(ro[i], &sv) != 0 && errno == ENOENT) continue;
        CHECK(statvfs(ro[i], &sv) == 0 && (sv.f_flag & ST_RDONLY), "`%s` is not read-only", ro[i]);
    }
    errno = 0;
    int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
    CHECK(fd < 0, "`/proc/sysrq-trigger` opened for writing");
    if (fd >= 0) close(fd);
    struct stat null, st, proc;
    CHECK(stat("/dev/null", &null) == 0 && stat("/proc", &proc) == 0, "stat /dev/null, /proc");
    const char *files[] = {"/proc/kcore", "/proc/kmsg", "/proc/keys", "/proc/timer_list",
                           "/proc/timer_stats", "/proc/sched_debug", "/proc/latency_stats"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (lstat(files[i], &st) != 0) {
            CHECK(errno == ENOENT, "lstat `%s`", files[i]);
            continue;
        }
        CHECK(S_ISCHR(st.st_mode) && st.st_rdev == null.st_rdev, "`%s` is not masked", files[i]);
        errno = 0;
        int fd = open(files[i], O_RDONLY | O_CLOEXEC);
        CHECK(fd < 0, "masked `%s` opens", files[i]);
        if (fd >= 0) close(fd);
    }
    const char *dirs[] = {"/proc/acpi", "/proc/scsi", "/proc/asound"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        if (lstat(dirs[i], &st) != 0) {
            CHECK(errno == ENOENT, "lstat `%s`", dirs[i]);
            continue;
        }
        CHECK(S_ISDIR(st.st_mode) && st.st_dev != proc.st_dev, "`%s` is not masked", dirs[i]);
        DIR *d = opendir(dirs[i]);
        int entries = 0;
        for (struct dirent *e; d && (e = readdir(d));)
            entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        if (d) closedir(d);
        CHECK(entries == 0, "masked `%s` has %d entries", dirs[i], entries);
    }
    /* What builds use still works. */
    char buf[256];
    CHECK(read_file("/proc/self/stat", buf, sizeof buf) > 0, "read /proc/self/stat");
    CHECK(read_file("/proc/sys/kernel/ostype", buf, sizeof buf) > 0, "read a sysctl");
    CHECK(read_file("/proc/cpuinfo", buf, sizeof buf) > 0, "read /proc/cpuinfo");
}

/* dev-nodes: the device nodes bound from the host cannot be changed (chmod, chown, utimes by
 * path and by descriptor) but still work as devices. */
static void check_dev_nodes(char **argv) {
    (void)argv;
    const char *nodes[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                           "/dev/tty"};
    struct timespec past[2] = {{.tv_sec = 1}, {.tv_sec = 1}};
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        const char *n = nodes[i];
        struct stat st;
        CHECK(lstat(n, &st) == 0 && S_ISCHR(st.st_mode), "`%s` is not a device", n);
        errno = 0;
        CHECK(chmod(n, 0777) == -1, "chmod 0777 `%s` succeeded", n);
        errno = 0;
        CHECK(chmod(n, st.st_mode & 07777) == -1, "chmod to its own mode `%s` succeeded", n);
        errno = 0;
        CHECK(chown(n, getuid(), getgid()) == -1, "chown `%s` succeeded", n);
        errno = 0;
        CHECK(utimensat(AT_FDCWD, n, NULL, 0) == -1, "touch `%s` succeeded", n);
        errno = 0;
        CHECK(utimensat(AT_FDCWD, n, past, 0) == -1, "utimes `%s` succeeded", n);
        if (strcmp(n, "/dev/tty") == 0) continue; /* no controlling terminal to open */
        int fd = open(n, O_RDWR | O_CLOEXEC);
        CHECK(fd >= 0, "open `%s` read-write", n);
        if (fd < 0) continue;
        errno = 0;
        CHECK(futimens(fd, NULL) == -1, "futimens `%s` succeeded", n);
        errno = 0;
        CHECK(fchmod(fd, 0777) == -1, "fchmod `%s` succeeded", n);
        errno = 0;
        CHECK(fchown(fd, getuid(), getgid()) == -1, "fchown `%s` succeeded", n);
        close(fd);
    }
    char buf[8];
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1, "write /dev/null");
    close(fd);
    fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && read(fd, buf, 8) == 8, "read /dev/zero");
    close(fd);
}

/* env NAME=VALUE...: the environment is exactly these. */
static void check_env(char **argv) {
    int want = 0, got = 0;
    for (char **a = argv; *a; a++) want++;
    for (char **e = environ; *e; e++, got++) {
        int found = 0;
        for (char **a = argv; *a; a++) found |= !strcmp(*a, *e);
        CHECK(found, "unexpected variable `%s`", *e);
    }
    CHECK(got == want, "%d variables, want %d", got, want);
}

/* misc HOSTNAME CWD: hostname, cwd, /dev contents, stdin at EOF. */
static void check_misc(char **argv) {
    char buf[256];
    CHECK(gethostname(buf, sizeof buf) == 0 && !strcmp(buf, argv[0]), "hostname `%s`", buf);
    CHECK(getcwd(buf, sizeof buf) && !strcmp(buf, argv[1]), "cwd `%s`", buf);
    CHECK(read(0, buf, 1) == 0, "stdin is not at EOF (not /dev/null)");
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1, "/dev/null");
    close(fd);
    fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    CHECK(fd >= 0 && write(fd, "x", 1) == -1 && errno == ENOSPC, "/dev/full");
    close(fd);
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && read(fd, buf, 16) == 16, "/dev/urandom");
    close(fd);
    fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && read(fd, buf, 4) == 4 && buf[0] == 0, "/dev/zero");
    close(fd);
    fd = open("/dev/shm/x", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    CHECK(fd >= 0, "/dev/shm is not writable");
    close(fd);
    fd = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(fd >= 0, "/dev/ptmx");
    close(fd);
    struct stat st;
    CHECK(stat("/dev/fd/0", &st) == 0, "/dev/fd");
    /* Only stdio crossed into the sandbox. */
    for (int i = 3; i < 64; i++) CHECK(fcntl(i, F_GETFD) == -1, "descriptor %d leaked", i);
}

/* daemon TOKEN: leave a daemonised grandchild running, then exit 0. */
static void daemonise(char **argv) {
    int p[2];
    if (pipe(p) != 0) exit(2);
    if (fork() == 0) {
        setsid();
        if (fork() == 0) {
            close(p[0]);
            if (write(p[1], "r", 1) != 1) _exit(2);
            close(p[1]);
            for (;;) pause();
        }
        _exit(0);
    }
    close(p[1]);
    char c;
    if (read(p[0], &c, 1) != 1) exit(2);
    (void)argv;
    printf("ok\n");
    exit(0);
}

/* Forks children that wait forever until a fork fails; prints how many there are and the
 * error, then exits 3 (the children stay until the sandbox is torn down). */
static void forkbomb(char **argv) {
    (void)argv;
    int n = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid == 0) { for (;;) pause(); }
        if (pid < 0) {
            printf("forked %d: %s\n", n, strerror(errno));
            fflush(stdout);
            exit(3);
        }
        n++;
    }
}

/* Allocates and touches argv[0] MiB; prints "out of memory" and exits 4 if it cannot. */
static void hog(char **argv) {
    size_t mib = (size_t)atol(argv[0]);
    char *p = malloc(mib << 20);
    if (!p) {
        printf("out of memory after asking for %zu MiB\n", mib);
        fflush(stdout);
        exit(4);
    }
    for (size_t i = 0; i < mib << 20; i += 4096) p[i] = 1;
    printf("allocated %zu MiB\n", mib);
}

/* Prints argv[0] lines, one every argv[1] milliseconds. */
static void tick(char **argv) {
    int n = atoi(argv[0]);
    struct timespec ts = { .tv_sec = atoi(argv[1]) / 1000, .tv_nsec = (atoi(argv[1]) % 1000) * 1000000L };
    for (int i = 0; i < n; i++) {
        printf("tick %d\n", i);
        fflush(stdout);
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe CHECK [ARGS...]\n");
        return 2;
    }
    const char *cmd = argv[1];
    char **rest = argv + 2;
    if (!strcmp(cmd, "ids")) check_ids(rest);
    else if (!strcmp(cmd, "absent")) check_absent(rest);
    else if (!strcmp(cmd, "root-entries")) check_root_entries(rest);
    else if (!strcmp(cmd, "readonly")) check_readonly(rest);
    else if (!strcmp(cmd, "writable")) check_writable(rest);
    else if (!strcmp(cmd, "write-file")) write_path(rest);
    else if (!strcmp(cmd, "net-tcp")) check_tcp(rest);
    else if (!strcmp(cmd, "net-unix")) check_unix(rest);
    else if (!strcmp(cmd, "net-ifaces")) check_ifaces(rest);
    else if (!strcmp(cmd, "pids")) check_pids(rest);
    else if (!strcmp(cmd, "caps")) check_caps(rest);
    else if (!strcmp(cmd, "chmod")) check_chmod(rest);
    else if (!strcmp(cmd, "xattr")) check_xattr(rest);
    else if (!strcmp(cmd, "io-uring")) check_io_uring(rest);
    else if (!strcmp(cmd, "tiocsti")) check_tiocsti(rest);
    else if (!strcmp(cmd, "foreign-arch")) check_foreign_arch(rest);
    else if (!strcmp(cmd, "env")) check_env(rest);
    else if (!strcmp(cmd, "proc")) check_proc(rest);
    else if (!strcmp(cmd, "dev-nodes")) check_dev_nodes(rest);
    else if (!strcmp(cmd, "misc")) check_misc(rest);
    else if (!strcmp(cmd, "daemon")) daemonise(rest);
    else if (!strcmp(cmd, "forkbomb")) forkbomb(rest);
    else if (!strcmp(cmd, "hog")) hog(rest);
    else if (!strcmp(cmd, "tick")) tick(rest);
    else if (!strcmp(cmd, "exit")) return atoi(rest[0]);
    else if (!strcmp(cmd, "signal")) { raise(atoi(rest[0])); return 99; }
    else if (!strcmp(cmd, "sleep")) { printf("ready\n"); fflush(stdout); for (;;) pause(); }
    else if (!strcmp(cmd, "cat")) {
        char buf[4096];
        ssize_t n;
        while ((n = read(0, buf, sizeof buf)) > 0)
            if (write(1, buf, n) != n) return 3;
        return 0;
    } else {
        fprintf(stderr, "probe: unknown check `%s`\n", cmd);
        return 2;
    }
    if (failures) return 1;
    printf("ok\n");
    return 0;
}
