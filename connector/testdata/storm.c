/*
 * storm: the root of a fork storm for BenchmarkReaderCPU. It forks N
 * children that exit at once (2N kernel events: fork and exit), as fast as
 * it can, lets the kernel reap them (SIGCHLD ignored), waits until all are
 * gone, and exits.
 *
 *   storm N
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	signal(SIGCHLD, SIG_IGN);
	for (long i = 0; i < n; i++) {
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
