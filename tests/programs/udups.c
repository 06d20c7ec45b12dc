/* Two static functions of the same name, pt_dup: one here, one in udups2.c
 * (two translation units, linked into one program), for the "several
 * definitions" test. */
static int __attribute__((noinline)) pt_dup(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int pt_dup_other(int x);

int main(int argc, char **argv)
{
	(void)argv;
	return pt_dup(argc) + pt_dup_other(argc) > 0 ? 0 : 1;
}
