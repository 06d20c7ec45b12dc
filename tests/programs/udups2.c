/* The second static pt_dup (see udups.c). */
static int __attribute__((noinline)) pt_dup(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 2;
}

int pt_dup_other(int x)
{
	return pt_dup(x);
}
