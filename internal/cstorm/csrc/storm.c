/*
 * storm: the C processes of the benchmark suite (internal/cstorm builds it
 * with gcc at run time). C, not Go, so that the storm is as fast as the
 * kernel allows and the filler costs next to nothing.
 *
 *   storm [-g GATE] [-r RUSAGE] N [RATE]
 *     Waits at its gate (one byte read from the FIFO GATE, or from stdin
 *     without -g), then forks N children that exit at once (_exit(0): two
 *     kernel events each, fork and exit), flat out, or RATE a second on a
 *     fixed schedule. SIGCHLD is ignored, so the kernel reaps them. When
 *     every child is gone it writes "forked N in SECONDS s" to stdout and,
 *     with -r, its own CPU (user and system, µs, children included) to the
 *     file RUSAGE, and exits 0.
 *
 *   storm hold N
 *     Forks N-1 children that sleep (pause), so that it and they make a
 *     tree of N processes; writes "ready" to stdout once all are there,
 *     then waits for EOF on stdin, kills and reaps its children a hundred
 *     at a time, and exits (if it is killed first, they die with it:
 *     PR_SET_PDEATHSIG). Used both as the watched tree and as idle filler
 *     of the host.
 *
 *   storm listen PARENT N
 *     The latency anchor: a proc connector listener as plain as forkstat
 *     (one blocking recv per event, no processing). Writes "ready" once it
 *     listens; then, for each fork whose parent is PARENT, takes
 *     CLOCK_MONOTONIC right after recv minus the event's timestamp (the
 *     kernel's CLOCK_MONOTONIC at the fork). After N of them, or on
 *     SIGTERM, it writes the latencies in ns, one a line, and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int hold(long n)
{
	pid_t self = getpid();
	pid_t *kids = calloc(n > 0 ? n : 1, sizeof(pid_t));
	if (kids == NULL) {
		perror("storm hold");
		return 1;
	}
	for (long i = 1; i < n; i++) {
		pid_t p = fork();
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != self)
				_exit(0);
			for (;;)
				pause();
		}
		if (p < 0) {
			if (errno != EAGAIN) {
				perror("storm hold: fork");
				return 1;
			}
			i--;
			usleep(1000);
			continue;
		}
		kids[i] = p;
	}
	printf("ready\n");
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof buf) > 0 || errno == EINTR)
		errno = 0;
	/*
	 * A hundred children at a time, killed then reaped, so that the end
	 * of 20,000 processes does not make them all runnable at once (a
	 * load average in the thousands for minutes), and so that they are
	 * gone when the root is.
	 */
	for (long i = 1; i < n; i += 100) {
		long end = i + 100 < n ? i + 100 : n;
		for (long j = i; j < end; j++)
			kill(kids[j], SIGKILL);
		for (long j = i; j < end; j++)
			while (waitpid(kids[j], NULL, 0) < 0 && errno == EINTR)
				;
	}
	return 0;
}

static volatile sig_atomic_t stop_listen;

static void on_term(int sig)
{
	(void)sig;
	stop_listen = 1;
}

static int listen_forks(long parent, long n)
{
	int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
	if (s < 0) {
		perror("storm listen: socket");
		return 1;
	}
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0};
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
		perror("storm listen: bind");
		return 1;
	}
	int big = 4 << 20;
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
	struct {
		struct nlmsghdr nl;
		struct cn_msg cn;
		enum proc_cn_mcast_op op;
	} __attribute__((packed)) req;
	memset(&req, 0, sizeof req);
	req.nl.nlmsg_len = sizeof req;
	req.nl.nlmsg_type = NLMSG_DONE;
	req.nl.nlmsg_pid = getpid();
	req.cn.id.idx = CN_IDX_PROC;
	req.cn.id.val = CN_VAL_PROC;
	req.cn.len = sizeof(enum proc_cn_mcast_op);
	req.op = PROC_CN_MCAST_LISTEN;
	if (send(s, &req, sizeof req, 0) < 0) {
		perror("storm listen: send");
		return 1;
	}
	struct sigaction act = {.sa_handler = on_term}; /* no SA_RESTART: recv returns */
	sigaction(SIGTERM, &act, NULL);
	long *lat = calloc(n > 0 ? n : 1, sizeof *lat);
	long got = 0;
	printf("ready\n");
	fflush(stdout);
	char buf[4096] __attribute__((aligned(8)));
	while (got < n && !stop_listen) {
		ssize_t len = recv(s, buf, sizeof buf, 0);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (len < 0) {
			if (errno == EINTR || errno == ENOBUFS)
				continue;
			perror("storm listen: recv");
			break;
		}
		struct nlmsghdr *nl = (struct nlmsghdr *)buf;
		if (len < (ssize_t)(NLMSG_HDRLEN + sizeof(struct cn_msg) + sizeof(struct proc_event)))
			continue;
		struct cn_msg *cn = NLMSG_DATA(nl);
		struct proc_event *ev = (struct proc_event *)cn->data;
		if (ev->what != PROC_EVENT_FORK || ev->event_data.fork.parent_tgid != parent ||
		    ev->event_data.fork.child_pid != ev->event_data.fork.child_tgid)
			continue;
		lat[got++] = (long)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec - (long long)ev->timestamp_ns);
	}
	for (long i = 0; i < got; i++)
		printf("%ld\n", lat[i]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *gate = NULL, *rusage_path = NULL;
	int opt;
	if (argc == 3 && strcmp(argv[1], "hold") == 0)
		return hold(atol(argv[2]));
	if (argc == 4 && strcmp(argv[1], "listen") == 0)
		return listen_forks(atol(argv[2]), atol(argv[3]));
	while ((opt = getopt(argc, argv, "g:r:")) != -1) {
		switch (opt) {
		case 'g':
			gate = optarg;
			break;
		case 'r':
			rusage_path = optarg;
			break;
		default:
			fprintf(stderr, "usage: storm [-g GATE] [-r RUSAGE] N [RATE] | storm hold N\n");
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: storm [-g GATE] [-r RUSAGE] N [RATE] | storm hold N\n");
		return 2;
	}
	long n = atol(argv[optind]);
	long rate = optind + 1 < argc ? atol(argv[optind + 1]) : 0;
	int fd = 0;
	if (gate != NULL && (fd = open(gate, O_RDONLY | O_CLOEXEC)) < 0) {
		perror("storm: gate");
		return 1;
	}
	char c;
	if (read(fd, &c, 1) != 1) {
		fprintf(stderr, "storm: the gate closed without a byte\n");
		return 1;
	}
	if (fd != 0)
		close(fd);
	signal(SIGCHLD, SIG_IGN);
	double t0 = now();
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (long i = 0; i < n; i++) {
		if (rate > 0) {
			next.tv_nsec += 1000000000L / rate;
			if (next.tv_nsec >= 1000000000L) {
				next.tv_nsec -= 1000000000L;
				next.tv_sec++;
			}
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		}
		pid_t p = fork();
		if (p == 0)
			_exit(0);
		if (p < 0) {
			if (errno != EAGAIN) {
				perror("storm: fork");
				return 1;
			}
			i--;
			usleep(100);
		}
	}
	double t1 = now();
	while (wait(NULL) > 0 || errno == EINTR)
		;
	printf("forked %ld in %.6f s\n", n, t1 - t0);
	fflush(stdout);
	if (rusage_path != NULL) {
		struct rusage self, kids;
		getrusage(RUSAGE_SELF, &self);
		getrusage(RUSAGE_CHILDREN, &kids);
		long long us = 0;
		struct timeval tv[] = {self.ru_utime, self.ru_stime, kids.ru_utime, kids.ru_stime};
		for (int i = 0; i < 4; i++)
			us += tv[i].tv_sec * 1000000LL + tv[i].tv_usec;
		FILE *f = fopen(rusage_path, "w");
		if (f != NULL) {
			fprintf(f, "%lld\n", us);
			fclose(f);
		}
	}
	return 0;
}
