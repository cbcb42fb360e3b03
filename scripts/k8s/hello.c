/*
 * A tiny static HTTP server for smoke-testing the Kubernetes test bed
 * (scripts/k8s/smoke.sh): it answers every connection on port 8080 (or
 * argv[1]) with "hello from <hostname>" and exits on SIGTERM.
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void down(int sig)
{
	(void)sig;
	_exit(0);
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 8080, one = 1, s;
	struct sockaddr_in addr;
	char host[256] = "?", body[300], resp[512], req[1024];

	signal(SIGTERM, down);
	signal(SIGINT, down);
	signal(SIGPIPE, SIG_IGN);
	gethostname(host, sizeof(host) - 1);
	snprintf(body, sizeof(body), "hello from %s\n", host);
	snprintf(resp, sizeof(resp),
		 "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
		 strlen(body), body);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(port);
	if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(s, 16) < 0) {
		perror("bind/listen");
		return 1;
	}
	printf("listening on :%d\n", port);
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		(void)!read(c, req, sizeof(req));
		(void)!write(c, resp, strlen(resp));
		close(c);
	}
}
