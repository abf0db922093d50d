/* trainer/main.c — ./train: parse the configuration, then run one mode. Wiring only.
 *
 *   ./train --train data/train.lmdb --val data/val.lmdb --arch resnet50 -b 32
 *   ./train --mode eval --val data/val.lmdb --checkpoint run/checkpoint.bin
 *
 * Exit codes: 0 ok, 1 failure, 2 usage, 130 stopped by a signal (after a checkpoint).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/cfg.h"
#include "core/log.h"
#include "trainer/modes.h"

volatile int g_stop_signal;

static void on_signal(int sig) { g_stop_signal = sig; }

int main(int argc, char **argv)
{
    ih_cfg cfg;
    ih_cfg_defaults(&cfg);
    int help = 0;
    if (ih_cfg_parse(&cfg, argc, argv, &help) != IH_OK || (!help && ih_cfg_derive(&cfg) != IH_OK)) {
        fprintf(stderr, "train: %s\n", ih_last_error());
        return 2;
    }
    if (help) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    ih_err e = cfg.mode == IH_MODE_EVAL ? mode_eval(&cfg) : mode_train(&cfg);
    if (e != IH_OK) {
        fprintf(stderr, "train: error: %s\n", ih_last_error());
        return e == IH_E_USAGE ? 2 : 1;
    }
    return g_stop_signal ? 130 : 0;
}
