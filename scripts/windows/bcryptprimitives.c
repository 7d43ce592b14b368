/*
 * A stand-in for Windows' bcryptprimitives.dll, for running wasi-kv.exe under wine only.
 *
 * Rust's standard library (1.78 and later) takes its randomness from ProcessPrng in
 * bcryptprimitives.dll, which every Windows 10 and later has but wine 8.0 does not: without it
 * the exe does not start (status c0000135). This DLL exports ProcessPrng and fills the buffer
 * from RtlGenRandom (advapi32's SystemFunction036), which wine implements. scripts/platforms.sh
 * builds it with mingw-w64 and puts it next to the exe in the wine test environment; it is
 * never shipped with a build.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
