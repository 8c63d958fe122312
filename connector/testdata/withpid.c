/*
 * withpid PID PROG [ARGS...]: runs PROG as a child whose PID is PID
 * (clone3 with set_tid, which needs CAP_SYS_ADMIN), waits for it, and
 * prints its PID. Exit status 3: PID is taken (EEXIST); 2: another
 * failure. The tests use it to give a new process a PID that a member
 * had, without racing the host's other forks for it as ns_last_pid does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: withpid PID PROG [ARGS...]\n");
		return 2;
	}
	pid_t want = (pid_t)atol(argv[1]);
	struct clone_args ca;
	memset(&ca, 0, sizeof ca);
	ca.exit_signal = SIGCHLD;
	ca.set_tid = (uint64_t)(uintptr_t)&want;
	ca.set_tid_size = 1;
	long r = syscall(SYS_clone3, &ca, sizeof ca);
	if (r < 0) {
		fprintf(stderr, "withpid: clone3 with pid %d: %s\n", (int)want, strerror(errno));
		return errno == EEXIST ? 3 : 2;
	}
	if (r == 0) {
		execv(argv[2], argv + 2);
		_exit(127);
	}
	int st;
	if (waitpid((pid_t)r, &st, 0) < 0) {
		perror("withpid: waitpid");
		return 2;
	}
	printf("%ld\n", r);
	return 0;
}
