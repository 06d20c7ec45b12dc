/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * <bpf/usdt.bpf.h> includes <linux/errno.h>, which includes <asm/errno.h>:
 * on Debian that lives in the multiarch directory
 * /usr/include/x86_64-linux-gnu, which build.py does not search (adding it to
 * every compile would reorder forward declarations in the other objects'
 * BTF).  The errno values are the generic ones on x86-64.
 */
#include <asm-generic/errno.h>
