/* core/log.h — leveled, per-subsystem logging on stderr.
 *
 * Line prefix: `host:pid:tid rN LEVEL SUBSYS`; WARN adds file:line. Controlled by
 * IH_DEBUG=WARN|INFO|TRACE (default WARN), IH_DEBUG_SUBSYS=PIPE,COMM,... (default all) and
 * IH_DEBUG_FILE=path (%h host, %p pid). Results and tables go to stdout via ih_print0,
 * which prints on rank 0 only. All functions are thread-safe and never block for long.
 */
#ifndef IH_LOG_H
#define IH_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    IH_LOG_PIPE = 1 << 0,
    IH_LOG_MODEL = 1 << 1,
    IH_LOG_OPTIM = 1 << 2,
    IH_LOG_COMM = 1 << 3,
    IH_LOG_NET = 1 << 4,
    IH_LOG_BOOT = 1 << 5,
    IH_LOG_CKPT = 1 << 6,
    IH_LOG_TRAIN = 1 << 7,
    IH_LOG_ALL = 0xff
};

enum { IH_LEVEL_WARN = 0, IH_LEVEL_INFO = 1, IH_LEVEL_TRACE = 2 };

/* Sets the rank shown in the prefix and used by ih_print0 (default 0). Call once at start. */
void ih_log_set_rank(int rank);
int ih_log_rank(void);

/* Returns nonzero when a message of this level and subsystem would be printed. */
int ih_log_enabled(int level, int subsys);

void ih_log_write(int level, int subsys, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* printf to stdout on rank 0 only (flushed). */
void ih_print0(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define IH_WARN(...) ih_log_write(IH_LEVEL_WARN, IH_LOG_ALL, __FILE__, __LINE__, __VA_ARGS__)
#define IH_INFO(sub, ...)                                                              \
    do {                                                                               \
        if (ih_log_enabled(IH_LEVEL_INFO, (sub)))                                      \
            ih_log_write(IH_LEVEL_INFO, (sub), __FILE__, __LINE__, __VA_ARGS__);       \
    } while (0)
#define IH_TRACE(sub, ...)                                                             \
    do {                                                                               \
        if (ih_log_enabled(IH_LEVEL_TRACE, (sub)))                                     \
            ih_log_write(IH_LEVEL_TRACE, (sub), __FILE__, __LINE__, __VA_ARGS__);      \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
