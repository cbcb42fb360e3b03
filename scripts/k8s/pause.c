/*
 * The pod sandbox's process for the Kubernetes test bed
 * (scripts/k8s-testbed.sh): it holds the pod's namespaces, reaps orphans and
 * exits on SIGINT or SIGTERM, like the upstream pause container. Built static
 * and put into an image under containerd's sandbox image name, so that no
 * registry is needed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void down(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (execlaw k8s test bed)");
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not pid 1\n");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = down;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	for (;;)
		pause();
}
