/* sd-notify.c - the sd_notify(3) datagram to $NOTIFY_SOCKET, for blkfuse.service (Type=notify). */
#include "config.h"
#include "cli/sd-notify.h"
#include "block/util.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void sd_notify_state(const char *state)
{
    const char *path = g_getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    size_t len;
    int fd;

    if (!path) {
        return;
    }
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len < 2 || len > sizeof(addr.sun_path)) {
        log_debug("NOTIFY_SOCKET=%s: not a socket path; systemd not told %s", path, state);
        return;
    }
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@') {
        addr.sun_path[0] = '\0';        /* abstract namespace */
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr,
                         offsetof(struct sockaddr_un, sun_path) + len) < 0) {
        log_debug("NOTIFY_SOCKET=%s: cannot send %s: %s", path, state, g_strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
}
