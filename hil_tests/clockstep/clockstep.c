/* LD_PRELOAD shim: steps CLOCK_REALTIME of one process as NTP or a hand-set clock would, and
 * leaves CLOCK_MONOTONIC alone (a real step never moves it).
 *
 * The step is read from the file named by CGW_CLOCK_STEP_FILE: a whole number of milliseconds to
 * add to the real wall clock (e.g. -7200000), re-read at most every 50 ms. Stepping the machine's
 * own clock would disturb every other process on a shared test machine; libfaketime, which does
 * this in general, breaks Python 3.11's sleeps (clock_nanosleep on CLOCK_MONOTONIC: EINVAL). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
static clock_gettime_fn real_clock_gettime;
static long long step_ns;
static long long next_read_ns;

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    real_clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long current_step(void) {
    if (!real_clock_gettime)
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    long long mono = now_ns(CLOCK_MONOTONIC);
    if (mono >= __atomic_load_n(&next_read_ns, __ATOMIC_RELAXED)) {
        __atomic_store_n(&next_read_ns, mono + 50000000LL, __ATOMIC_RELAXED);
        const char *path = getenv("CGW_CLOCK_STEP_FILE");
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        if (fd >= 0) {
            char text[32] = {0};
            ssize_t n = read(fd, text, sizeof text - 1);
            close(fd);
            if (n > 0)
                __atomic_store_n(&step_ns, strtoll(text, NULL, 10) * 1000000LL, __ATOMIC_RELAXED);
        }
    }
    return __atomic_load_n(&step_ns, __ATOMIC_RELAXED);
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    long long step = current_step();
    int result = real_clock_gettime(clock, ts);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        long long t = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + step;
        ts->tv_sec = t / 1000000000LL;
        ts->tv_nsec = t % 1000000000LL;
    }
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    int result = clock_gettime(CLOCK_REALTIME, &ts);
    if (result == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
