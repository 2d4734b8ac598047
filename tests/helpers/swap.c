/* The attacker of the race tests: exchanges two names with renameat2(RENAME_EXCHANGE) in a
 * loop, as a tenant that is root in its container can. Built statically by the tests so it
 * runs in a busybox image: cc -static -O2 -o swap swap.c */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: swap A B\n");
        return 2;
    }
    for (;;) {
        if (renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
            perror("renameat2");
            return 1;
        }
    }
}
