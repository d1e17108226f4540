// The check macro of the plain-C++ plugin tests (plugins/*/tests): a failed CHECK prints
// its place and condition and the test goes on; checkSummary() ends main().
#pragma once

#include <cstdio>

inline int gFailures = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                                \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

// main()'s result: 0 and `okLine` printed when every check passed, else 1 and the count.
inline int checkSummary(char const* okLine)
{
    if (gFailures)
    {
        std::printf("%d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("%s\n", okLine);
    return 0;
}
