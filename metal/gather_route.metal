// Instantiations of the expert routing: gather_route_<dtype of the output it fills with NaN rows>.
#include "gather_route.h"

instantiate_kernel("gather_route_float16", gather_route, half)
instantiate_kernel("gather_route_bfloat16", gather_route, bfloat)
instantiate_kernel("gather_route_float32", gather_route, float)
