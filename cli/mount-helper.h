/* mount-helper.h - blkfuse as mount(8)'s helper for the file system type fuse.blkfuse.
 *
 * mount(8) runs "/sbin/mount.fuse.blkfuse SOURCE MOUNTPOINT [-sfnv] [-N NS] [-o OPTS]
 * [-t TYPE]" for "mount -t fuse.blkfuse" and fstab lines of that type; make install links that
 * name to blkfuse, whose main() hands such an argv here.
 */
#ifndef CLI_MOUNT_HELPER_H
#define CLI_MOUNT_HELPER_H

#include <stdbool.h>
#include <glib.h>

/* Runs "blkfuse mount" with the parsed options (name -> value, as the option parser makes
 * them) and operands { IMAGE, MOUNTPOINT }; returns blkfuse's exit status. */
typedef int (*MountHelperRun)(GHashTable *opts, int argc, char **argv);

/* True when argv0's base name is mount.fuse.blkfuse (or another mount.* name). */
bool mount_helper_invoked(const char *argv0);

/* Parse a mount(8) helper command line and mount through run.  Returns mount(8)'s exit
 * status: 0 mounted, 1 bad invocation, 32 mount failure. */
int mount_helper_main(int argc, char **argv, MountHelperRun run);

/* True for an option of mount(8), systemd or fuse that means nothing to a blkfuse export and
 * is dropped (noauto, _netdev, nofail, x-systemd.*, defaults, nosuid, ...). */
bool mount_option_is_generic(const char *key);

#endif
