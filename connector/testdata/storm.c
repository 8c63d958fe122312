/*
 * storm: the root of a fork storm for BenchmarkReaderCPU. It forks N
 * children that exit at once (2N kernel events: fork and exit), as fast as
 * it can, lets the kernel reap them (SIGCHLD ignored), waits until all are
 * gone, and exits.
 *
 *   storm N [wait|go] [RATE]
 *
 * With "wait" it reads one byte from stdin before it starts, so that
 * listeners can arm themselves with its pid first. With RATE it forks
 * RATE children a second, on a fixed schedule, instead of as fast as it
 * can.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	char c;
	if (argc > 2 && strcmp(argv[2], "wait") == 0 && read(0, &c, 1) != 1)
		return 1;
	long rate = argc > 3 ? atol(argv[3]) : 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	signal(SIGCHLD, SIG_IGN);
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
			if (errno != EAGAIN)
				return 1;
			i--;
			usleep(100);
		}
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return 0;
}
