/* mount-helper.c - blkfuse as mount(8)'s helper: mount -t fuse.blkfuse and fstab lines.
 *
 * The helper only translates: the operands and -o options go to "blkfuse mount" as they are
 * (its -o takes every mount option by name, see mount_options_from_o in blkfuse.c), which
 * daemonizes and returns once the mount is live, so mount(8) and systemd's mount units see
 * the mount when the helper exits and a failure in its exit status.
 */
#include "config.h"
#include "cli/mount-helper.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* mount(8)'s exit statuses (mount(8), RETURN CODES). */
enum {
    MOUNT_EX_SUCCESS = 0,
    MOUNT_EX_USAGE = 1,
    MOUNT_EX_FAIL = 32,
};

bool mount_helper_invoked(const char *argv0)
{
    const char *base = strrchr(argv0, '/');

    base = base ? base + 1 : argv0;
    return g_str_has_prefix(base, "mount.");
}

/*
 * Options that mount(8), systemd's fstab generator or fuse's mount.fuse3 may hand a helper
 * and that mean nothing to an export of one file: fstab's and systemd's own (noauto, nofail,
 * _netdev, x-*, comment=), the user-mount permissions mount(8) has already checked (user,
 * users, owner, group), and VFS flags a FUSE file carries anyway or cannot use (nosuid, nodev,
 * noexec and their opposites, atime flavours, default_permissions which blkfuse always sets).
 */
static const char *const generic_options[] = {
    "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "owner",
    "group", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "async", "atime", "noatime",
    "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime",
    "diratime", "nodiratime", "iversion", "noiversion", "mand", "nomand", "silent", "loud",
    "default_permissions", NULL,
};

bool mount_option_is_generic(const char *key)
{
    if (g_str_has_prefix(key, "x-") || g_str_has_prefix(key, "X-") ||
        !strcmp(key, "comment") || !strcmp(key, "helper")) {
        return true;
    }
    return g_strv_contains(generic_options, key);
}

static void helper_usage(FILE *f, const char *prog)
{
    fprintf(f, "Usage: %s IMAGE MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTION,...] [-t TYPE]\n"
            "mount(8)'s helper for the type fuse.blkfuse: mounts IMAGE as the regular file "
            "MOUNTPOINT\nwith 'blkfuse mount'.  OPTIONs are those of 'blkfuse mount', by long "
            "name (format=qcow2,\nro, cache=none, ...), and format or protocol options; fstab's "
            "noauto, nofail, _netdev,\nx-systemd.* and the like are ignored.  See blkfuse(1).\n",
            prog);
}

/* -N: mount in another mount namespace, given as a path or a pid. */
static bool enter_namespace(const char *ns)
{
    g_autofree char *path = NULL;
    char *end;
    int fd;

    strtol(ns, &end, 10);
    path = *ns && !*end ? g_strdup_printf("/proc/%s/ns/mnt", ns) : g_strdup(ns);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNS) < 0) {
        fprintf(stderr, "blkfuse: -N %s: cannot enter the mount namespace %s: %s\n", ns, path,
                g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    close(fd);
    return true;
}

int mount_helper_main(int argc, char **argv, MountHelperRun run)
{
    g_autoptr(GHashTable) opts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GString) options = g_string_new(NULL);
    const char *operands[2] = { NULL, NULL };
    unsigned nr_operands = 0;
    bool fake = false, verbose = false;
    char *mount_argv[3];
    int status;

    /* Operands first, as mount(8) calls helpers, but any order is accepted. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            helper_usage(stdout, argv[0]);
            return MOUNT_EX_SUCCESS;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "-N") || !strcmp(a, "-t")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "blkfuse: %s needs an argument\n", a);
                return MOUNT_EX_USAGE;
            }
            if (a[1] == 'o') {
                g_string_append_printf(options, "%s%s", options->len ? "," : "", argv[i + 1]);
            } else if (a[1] == 'N' && !enter_namespace(argv[i + 1])) {
                return MOUNT_EX_FAIL;
            } else if (a[1] == 't' && strcmp(argv[i + 1], "fuse.blkfuse") &&
                       strcmp(argv[i + 1], "blkfuse")) {
                fprintf(stderr, "blkfuse: -t %s: this helper mounts only the type "
                        "fuse.blkfuse\n", argv[i + 1]);
                return MOUNT_EX_USAGE;
            }
            i++;
        } else if (a[0] == '-' && a[1] && strspn(a + 1, "sfnv") == strlen(a + 1)) {
            /* -s sloppy (unknown options are errors all the same: they reach the image's
             * drivers, which name them), -n no mtab (blkfuse writes none), -v verbose: say
             * what is run, -f fake: check the arguments, mount nothing. */
            fake |= strchr(a, 'f') != NULL;
            verbose |= strchr(a, 'v') != NULL;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "blkfuse: unknown mount helper option '%s'\n", a);
            helper_usage(stderr, argv[0]);
            return MOUNT_EX_USAGE;
        } else if (nr_operands < 2) {
            operands[nr_operands++] = a;
        } else {
            fprintf(stderr, "blkfuse: unexpected argument '%s'\n", a);
            helper_usage(stderr, argv[0]);
            return MOUNT_EX_USAGE;
        }
    }
    if (nr_operands < 2) {
        helper_usage(stderr, argv[0]);
        return MOUNT_EX_USAGE;
    }
    if (verbose) {
        fprintf(stderr, "blkfuse: mount%s%s %s %s\n", options->len ? " -o " : "",
                options->str, operands[0], operands[1]);
    }
    if (fake) {
        return MOUNT_EX_SUCCESS;
    }
    if (options->len) {
        g_hash_table_replace(opts, g_strdup("options"), g_strdup(options->str));
    }
    mount_argv[0] = (char *)operands[0];
    mount_argv[1] = (char *)operands[1];
    mount_argv[2] = NULL;
    status = run(opts, 2, mount_argv);
    return status == 0 ? MOUNT_EX_SUCCESS : status == 2 ? MOUNT_EX_USAGE : MOUNT_EX_FAIL;
}
