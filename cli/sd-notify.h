/* sd-notify.h - tell systemd how a Type=notify service is doing ($NOTIFY_SOCKET, sd_notify(3)),
 * without linking libsystemd. */
#ifndef CLI_SD_NOTIFY_H
#define CLI_SD_NOTIFY_H

/* Send state ("READY=1", "STOPPING=1", ...) to $NOTIFY_SOCKET; nothing without it.  Failures
 * are logged at debug level: systemd then times the service out, which says enough. */
void sd_notify_state(const char *state);

#endif
