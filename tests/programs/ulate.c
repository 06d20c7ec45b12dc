/* A shared library ufunc dlopens after the tests have attached ("late"). */
__attribute__((noinline)) int pt_late(int x)
{
	__asm__ volatile("" ::: "memory");
	return 3 * x;
}
