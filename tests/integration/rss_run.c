/* rss_run: runs a program and reports its peak resident set size.
 *
 * usage: rss_run PROGRAM [ARGS...]
 * The child inherits stdin, stdout and stderr; when it ends, one line
 * "rss_run: maxrss_kb=N" goes to stderr and rss_run exits with the child's
 * exit code (128 + signal if it was killed).
 *
 * Why a helper: a child forked from a large process (pytest) starts with
 * that process's pages, and Linux counts them into the child's ru_maxrss
 * even across exec.  Forked from this small program, the figure is the
 * measured program's own. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct rusage ru;
	int status;
	pid_t pid;

	if (argc < 2) {
		fprintf(stderr, "usage: rss_run PROGRAM [ARGS...]\n");
		return 2;
	}
	pid = fork();
	if (pid < 0) {
		perror("rss_run: fork");
		return 127;
	}
	if (pid == 0) {
		execv(argv[1], argv + 1);
		perror("rss_run: exec");
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0) {
		perror("rss_run: wait4");
		return 127;
	}
	fprintf(stderr, "rss_run: maxrss_kb=%ld\n", ru.ru_maxrss);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
