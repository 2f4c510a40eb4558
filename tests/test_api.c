#include <criterion/criterion.h>

#include "moescatter.h"

Test(api, version)
{
    int major = -1;
    cr_assert_eq(moes_version(&major, NULL, NULL), MOES_OK);
    cr_assert_eq(major, MOES_VERSION_MAJOR);
}
