/* ts_httpget.c - HTTP/1.0 GET over a loopback TCP socket (see ts_httpget.h).
 *
 * HTTP/1.0 with "Connection: close" lets the answer end at EOF, so there is
 * no chunked decoding or keep-alive bookkeeping: read everything, split the
 * status line and the headers from the body.
 */
#include "ts_httpget.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ts_testenv.h"

static int ts_httpget_connect(int port, double timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int ts_httpget(int port, const char *path, double timeout_s, int *status, char **body) {
    if (body)
        *body = NULL;
    int fd = ts_httpget_connect(port, timeout_s);
    if (fd < 0)
        return -1;
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path,
                     port);
    if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf)
            break;
        if (len == cap) {
            char *grown = realloc(buf, cap * 2 + 1);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t got = recv(fd, buf + len, cap - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            free(buf); /* timeout or reset: no complete answer */
            buf = NULL;
            break;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    if (!buf)
        return -1;
    buf[len] = '\0';
    int code = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/%*d.%*d %d", &code) != 1 || !sep) {
        free(buf);
        return -1;
    }
    *status = code;
    if (body) {
        size_t blen = len - (size_t)(sep + 4 - buf);
        memmove(buf, sep + 4, blen + 1);
        *body = buf;
    } else {
        free(buf);
    }
    return 0;
}

int ts_httpget_wait(int port, const char *path, int want, double seconds, char **body) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    double limit = ts_testenv_timeout(seconds);
    char *last = NULL;
    int rc = -1;
    for (;;) {
        int status = 0;
        char *text = NULL;
        if (ts_httpget(port, path, 2.0, &status, &text) == 0) {
            free(last);
            last = text;
            if (status == want) {
                rc = 0;
                break;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >
            limit)
            break;
        usleep(100 * 1000);
    }
    if (body)
        *body = last;
    else
        free(last);
    return rc;
}

int ts_httpget_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(addr);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &alen) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

double ts_httpget_sample(const char *text, const char *series, double missing) {
    size_t n = strlen(series);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return missing;
}

double ts_httpget_sum(const char *text, const char *prefix, int *n) {
    size_t plen = strlen(prefix);
    double sum = 0;
    int count = 0;
    for (const char *line = text; line && *line;) {
        if (strncmp(line, prefix, plen) == 0) {
            /* The value follows the line's last space (label values may hold spaces). */
            const char *nl = strchr(line, '\n'), *end = nl ? nl : line + strlen(line);
            const char *sp = end;
            while (sp > line && *sp != ' ')
                sp--;
            if (*sp == ' ') {
                sum += strtod(sp + 1, NULL);
                count++;
            }
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    if (n)
        *n = count;
    return sum;
}
