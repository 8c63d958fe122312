/*
 * leaderexit: a process whose first thread exits while a second one runs,
 * for TestIntegrationTreeFilterLeaderExitsFirst. It says "ready", waits
 * for a line on stdin, then the first thread exits alone; the second
 * waits until the first is a zombie, forks a child that exits at once,
 * prints the child's pid and ends the process with status 3.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t leader;

static int leader_gone(void)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/task/%d/stat", leader, leader);
	FILE *f = fopen(path, "r");
	if (!f)
		return 1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return !p || p[1] == 0 || p[2] == 'Z';
}

static void *second(void *arg)
{
	(void)arg;
	while (!leader_gone())
		usleep(1000);
	pid_t c = fork();
	if (c == 0)
		_exit(0);
	waitpid(c, NULL, 0);
	printf("%d\n", c);
	fflush(stdout);
	syscall(SYS_exit_group, 3);
	return NULL;
}

int main(void)
{
	char line[16];
	leader = getpid();
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;
	pthread_t t;
	if (pthread_create(&t, NULL, second, NULL) != 0)
		return 1;
	syscall(SYS_exit, 0); /* this thread only */
	return 1;
}
