/*
 * forkstarts: the process shapes of TestIntegrationForkStarts. It says
 * "ready" and waits for a line on stdin, then makes, one phase after the
 * other, N children of each kind and prints each kind's pids on a line:
 *
 *   1. plain forks of the main thread;
 *   2. forks of a second thread;
 *   3. CLONE_PARENT forks of a child (then the line is that child's pid
 *      followed by its children's, which are ours);
 *   4. children that exit at once.
 *
 * The children of 1-3 wait until the "hold" pipe closes, so that the test
 * can read /proc/PID/stat while they live. A second line on stdin closes
 * it; then it reaps everything and exits.
 *
 *   forkstarts N
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int hold[2];
static long n;

/* held waits until the hold pipe's write end closes everywhere. */
static void held(void)
{
	char c;
	close(hold[1]);
	while (read(hold[0], &c, 1) > 0)
		;
	_exit(0);
}

static void forks(void)
{
	for (long i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0)
			exit(1);
		if (p == 0)
			held();
		printf(" %d", p);
	}
	printf("\n");
	fflush(stdout);
}

static void *thread_forks(void *arg)
{
	(void)arg;
	forks();
	return NULL;
}

int main(int argc, char **argv)
{
	char line[16];
	n = argc > 1 ? atol(argv[1]) : 50;
	if (pipe(hold) != 0)
		return 1;
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;

	forks();

	pthread_t t;
	if (pthread_create(&t, NULL, thread_forks, NULL) != 0 || pthread_join(t, NULL) != 0)
		return 1;

	/* The middle child's CLONE_PARENT children are ours. */
	int out[2];
	if (pipe(out) != 0)
		return 1;
	pid_t mid = fork();
	if (mid < 0)
		return 1;
	if (mid == 0) {
		close(out[0]);
		for (long i = 0; i < n; i++) {
			long p = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
			if (p < 0)
				_exit(1);
			if (p == 0) {
				close(out[1]); /* the parent's read waits for EOF */
				held();
			}
			if (write(out[1], &p, sizeof p) != sizeof p)
				_exit(1);
		}
		_exit(0);
	}
	close(out[1]);
	printf("%d", mid);
	long p;
	while (read(out[0], &p, sizeof p) == sizeof p)
		printf(" %ld", p);
	printf("\n");
	fflush(stdout);
	waitpid(mid, NULL, 0);

	for (long i = 0; i < n; i++) {
		pid_t c = fork();
		if (c < 0)
			return 1;
		if (c == 0)
			_exit(0);
		printf(" %d", c);
	}
	printf("\n");
	fflush(stdout);

	if (!fgets(line, sizeof line, stdin))
		return 1;
	close(hold[1]);
	while (wait(NULL) > 0)
		;
	return 0;
}
