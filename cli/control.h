/* control.h - the daemon's control socket: line-delimited JSON requests and replies over a Unix
 * socket in the runtime directory, and the client side used by the CLI.
 *
 * Protocol: one JSON object per line.  Request {"cmd": NAME, ...}; reply {"ok": true, ...} or
 * {"ok": false, "error": MESSAGE, "errno": N}.  Commands: "list", "stats", "mount", "unmount",
 * "quit".  A reply to "unmount" comes once the export is gone (flushed and closed), or, when
 * its file stays open through the grace period, as an EBUSY error (the export stays).
 *
 * Threads: the server runs in the main thread's event loop.
 */
#ifndef CLI_CONTROL_H
#define CLI_CONTROL_H

#include <stdbool.h>
#include <glib.h>
#include "cli/json.h"

typedef struct ControlServer ControlServer;

/* Directory holding the daemons' sockets: $XDG_RUNTIME_DIR/blkfuse, else /run/blkfuse for root,
 * else /tmp/blkfuse-UID.  Created (mode 0700) when create is true.  Caller frees. */
char *control_runtime_dir(bool create, GError **errp);

/* Listen on path (NULL: RUNTIME_DIR/PID.sock).  serve: the daemon stays up without exports. */
ControlServer *control_server_new(const char *path, bool serve, GError **errp);
const char *control_server_path(ControlServer *srv);
/* Stop listening, remove the socket file, send nothing more. */
void control_server_free(ControlServer *srv);

/* True once the daemon should exit: asked to quit, or (not serving) its last export is gone. */
bool control_server_should_exit(ControlServer *srv);
void control_server_request_exit(ControlServer *srv);

/* Build the export description used by "list" and "stats". */
JsonValue *control_describe_exports(const char *mountpoint_filter);

/* --- client --- */

/* Send request to the daemon at path and return its reply (NULL with errp set on transport
 * errors; an {"ok": false} reply is returned as is).  timeout_ms <= 0: wait forever. */
JsonValue *control_call(const char *path, const JsonValue *request, int timeout_ms,
                        GError **errp);

/* Paths of every daemon socket in the runtime directory (stale ones are removed). */
GPtrArray *control_find_daemons(void);

#endif
