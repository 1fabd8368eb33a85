/* control.h - the daemon's control socket: line-delimited JSON requests and replies over a Unix
 * socket in the runtime directory, and the client side used by the CLI.
 *
 * Protocol: one JSON object per line (at most 64 KiB).  Request {"cmd": NAME, ...}; reply
 * {"ok": true, ...} or {"ok": false, "error": MESSAGE, "errno": N[, "field": NAME]}.  Commands:
 * "list", "stats", "mount", "unmount", "quit".  Replies come in request order; a reply to
 * "unmount" comes once the export is gone (flushed and closed), or, when its file stays open
 * through the grace period, as an EBUSY error (the export stays); the connection's later
 * requests wait for it.  Every field of every request is validated (type, range, allowed
 * values; unknown fields are refused) before anything is done: an error names the field.
 *
 * Untrusted clients: only root, the daemon's own user and the users it was started to serve
 * (--allow-user) are served (SO_PEERCRED).  No client can block the daemon: sockets are
 * non-blocking, each connection's replies are buffered (a connection whose client does not
 * read them is not read from either, and is dropped beyond 1 MiB), connections are limited in
 * number, and they are served only by the outermost event loop (external handlers, aio.h),
 * never from inside another request, with one exception: while an export opens (a remote image
 * may wait up to its connect timeout), the other clients are served from the opening's nested
 * polls, one request at a time.  "list" then shows the export with "state": "opening" (the
 * others say "mounted"), an "unmount" of it fails with EBUSY, and a "mount" waits until the open
 * is done.  The client that asked for the opening export is not read meanwhile.
 *
 * Threads: the server runs in the main thread's event loop.
 */
#ifndef CLI_CONTROL_H
#define CLI_CONTROL_H

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>
#include "cli/json-util.h"

typedef struct ControlServer ControlServer;

/* Directory holding the daemons' sockets: $XDG_RUNTIME_DIR/blkfuse, else /run/blkfuse for root,
 * else /tmp/blkfuse-UID.  Created (mode 0700) when create is true.  Caller frees. */
char *control_runtime_dir(bool create, GError **errp);

/* Listen on path (NULL: RUNTIME_DIR/PID.sock).  serve: the daemon stays up without exports.
 * allowed_uids (uid_t, may be NULL): users served besides root and the daemon's own; with any,
 * the socket is made mode 0666 (access is checked per connection). */
ControlServer *control_server_new(const char *path, bool serve, GArray *allowed_uids,
                                  GError **errp);
const char *control_server_path(ControlServer *srv);
/* Stop listening, remove the socket file, send nothing more. */
void control_server_free(ControlServer *srv);

/* True once the daemon should exit: asked to quit, or (not serving) its last export is gone. */
bool control_server_should_exit(ControlServer *srv);
void control_server_request_exit(ControlServer *srv);

/* Open the daemon's first export (see the opening exception above): blk_exp_add. */
struct BlockExportOptions;
struct BlockExport *control_server_add_export(ControlServer *srv,
                                              const struct BlockExportOptions *eo,
                                              GError **errp);
/* Build the export description used by "list" and "stats": a new JSON array. */
json_t *control_describe_exports(const char *mountpoint_filter);

/* Parse one line of the protocol (len bytes, no NUL needed) with the protocol's rules: any JSON
 * value (the caller checks it is an object), surrounding whitespace allowed, nothing after it;
 * refused: invalid UTF-8, \u0000, duplicate keys, integers outside int64, numbers too large for
 * a double, nesting deeper than 64 levels.  Returns a new reference, or NULL with *errp set to
 * "invalid JSON at offset N: WHAT". */
json_t *control_parse_json(const char *text, size_t len, GError **errp);

/* What the protocol node under bs (following file children down) says about itself as an
 * object of strings ({"server": ..., "connections": ...} for a remote image), or NULL when it
 * says nothing (local files). */
struct BlockDriverState;
json_t *control_describe_protocol(struct BlockDriverState *bs);

/* --- without a socket: fuzzing and tests --- */

/* A server that does not listen.  dry_run: "mount" and "unmount" requests are validated, then
 * refused without touching any image, mount point or export. */
ControlServer *control_server_new_detached(bool dry_run);

/* Process data as the bytes a client of uid sent on one connection before closing it, and
 * return every byte the server replied (caller frees). */
GString *control_server_process(ControlServer *srv, const void *data, size_t len, uid_t uid);

/* --- validation shared with the CLI --- */

/* An export id: 1 to 64 characters from A-Z a-z 0-9 and "._-:@+". */
bool control_check_export_id(const char *id, GError **errp);

/* Parse --allow-user's USER[,USER...] (names or numeric uids) into out (uid_t). */
bool control_parse_users(const char *spec, GArray *out, GError **errp);

/* --- client --- */

/* Send request to the daemon at path and return its reply (NULL with errp set on transport
 * errors; an {"ok": false} reply is returned as is): a new reference.  timeout_ms <= 0: wait
 * forever. */
json_t *control_call(const char *path, const json_t *request, int timeout_ms,
                     GError **errp);

/* Paths of every daemon socket in the runtime directory (stale ones are removed). */
GPtrArray *control_find_daemons(void);

#endif
