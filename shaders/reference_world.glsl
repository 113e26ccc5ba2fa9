// reference_world: the procedural landscape of worldwalk's ReferenceWorld, ray-marched per pixel.
//
// Inputs follow worldwalk's conventions: u_rotation and u_position are the camera-to-world pose
// (OpenCV camera: x right, y down, z forward; world y points DOWN), u_intrinsics the pixel
// intrinsics with pixel centres at integer coordinates and row 0 at the top. Inside this file the
// scene is built in the "scene frame" (x, -y, z) so heights read upwards: the camera at the origin
// stands 1.5 above a flat meadow, hills never reach eye level inside RING, water fills the basins,
// mountains close the horizon, and seeded landmarks (striped pillars, floating balls, framed
// blocks) stand around the spawn point. The landmarks are ray-traced analytically; only the
// terrain is marched. The world depends on u_seed only through integer hashing.
//
// Written for Mesa's llvmpipe, which runs 8 pixels in SIMD lanes and executes both sides of every
// `if` (only loops stop early, once all lanes are done). So the shader finds the surface first and
// then shades it once in straight-line code, and landmarks come sorted by kind so each loop runs
// one kind of intersection.

#if defined VERTEX_SHADER

void main() {
    // One triangle that covers the viewport; no vertex buffer needed.
    vec2 corner = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}

#elif defined FRAGMENT_SHADER

#ifndef MARCH_STEPS
#define MARCH_STEPS 80
#endif
#ifndef SHADOW_STEPS
#define SHADOW_STEPS 6
#endif
#define MAX_LANDMARKS 16

uniform mat3 u_rotation;    // camera-to-world rotation (world y down)
uniform vec3 u_position;    // camera centre in the world (world y down)
uniform vec4 u_intrinsics;  // fx, fy, cx, cy in pixels
uniform vec2 u_resolution;  // width, height in pixels
uniform uint u_seed;
// Landmarks sorted by kind: pillars [0, u_pillars), balls [u_pillars, u_balls), blocks up to
// u_landmarks. shape: x, z, size (radius or half width), top (a ball's centre); scene frame.
uniform int u_pillars;
uniform int u_balls;
uniform int u_landmarks;
uniform vec4 u_landmark_shape[MAX_LANDMARKS];
uniform vec3 u_landmark_color[MAX_LANDMARKS];  // linear RGB

out vec4 f_color;

const float GROUND = -1.5;      // meadow level around the spawn point
const float NEAR_TOP = -0.8;    // the hills' soft cap: no ground above this inside RING
const float RING = 150.0;       // where the mountains begin
const float WATER = -4.2;       // lakes fill the basins below this level
const float TOP = 52.0;         // nothing of the terrain rises above this
const float FAR = 480.0;
const float BASE = -60.0;       // pillars and blocks reach down below any valley floor
const vec3 SUN = vec3(0.4794, 0.5793, -0.6592);  // unit; behind-right of the spawn view, 35 deg up
const vec3 SUN_COLOR = vec3(1.35, 1.20, 0.98);
const vec3 SKY_ZENITH = vec3(0.13, 0.28, 0.66);
const vec3 SKY_HORIZON = vec3(0.60, 0.72, 0.86);
const mat2 OCTAVE = mat2(1.6, 1.2, -1.2, 1.6);  // rotate and double: decorrelates octaves

// ---- noise ------------------------------------------------------------------------------------

float hash01(ivec2 c) {  // uniform in [0, 1) per lattice point and seed
    uint n = uint(c.x) * 0x27d4eb2du + uint(c.y) * 0x165667b1u + u_seed * 0x9e3779b9u;
    n = (n ^ (n >> 15)) * 0x2c1b3c6du;
    n ^= n >> 13;
    return float(n >> 8) * (1.0 / 16777216.0);
}

float vnoise(vec2 x) {  // value noise in [0, 1]
    ivec2 i = ivec2(floor(x));
    vec2 f = fract(x);
    vec2 u = f * f * (3.0 - 2.0 * f);
    float a = hash01(i), b = hash01(i + ivec2(1, 0));
    float c = hash01(i + ivec2(0, 1)), d = hash01(i + ivec2(1, 1));
    return mix(mix(a, b, u.x), mix(c, d, u.x), u.y);
}

float fbm(vec2 x, int octaves) {  // in [0, 1 - 2^-octaves], mean about half of that
    float s = 0.0, a = 0.5;
    for (int i = 0; i < octaves; i++) {
        s += a * vnoise(x);
        x = OCTAVE * x;
        a *= 0.5;
    }
    return s;
}

float smin(float a, float b, float k) {
    float h = max(k - abs(a - b), 0.0) / k;
    return min(a, b) - h * h * k * 0.25;
}

// ---- terrain ----------------------------------------------------------------------------------

float ground(vec2 p, int octaves) {  // scene-frame height of the ground at p = (x, z)
    float r = length(p);
    float f = fbm(p * 0.014 + 11.0, octaves);
    float relief = smin(14.0 * (f - 0.47), NEAR_TOP - GROUND, 1.5);  // downs and basins, capped
    float ridge = 1.0 - abs(2.0 * f - 0.85);  // the same noise, folded into ridges
    return GROUND + smoothstep(7.0, 40.0, r) * relief  // a flat meadow at the spawn point
        + smoothstep(RING, RING + 110.0, r) * (4.0 + 44.0 * ridge * ridge);  // mountains
}

// Distance along the ray to the ground, or -1. gap0: height of the camera above the ground.
float march_ground(vec3 ro, vec3 rd, float tmax, float gap0) {
    float horizontal = length(rd.xz);
    float t = 0.0, gap = gap0;
    if (rd.y >= 0.0 && ro.y > NEAR_TOP) {
        // Above every hill and not descending: nothing to hit before the mountains.
        float b = dot(ro.xz, rd.xz), c = dot(ro.xz, ro.xz) - RING * RING;
        float a = max(horizontal * horizontal, 1e-12);
        t = c < 0.0 ? (-b + sqrt(b * b - a * c)) / a : 0.0;
        vec3 p = ro + rd * t;
        gap = p.y - ground(p.xz, 3);
    }
    float last_t = t, last_gap = gap;
    bool crossed = false;
    for (int i = 0; i < MARCH_STEPS; i++) {
        if (gap < 0.002 * t) {
            crossed = gap < 0.0;
            break;
        }
        vec3 p = ro + rd * t;
        if (t >= tmax || (p.y > TOP && rd.y >= 0.0)) break;
        // Step as if the ground rose toward the ray at a typical slope; where it rises faster
        // the ray steps under it and the crossing is refined below. The hills are broad (the
        // finest octave is ~18 units across), so a step cannot jump over one. The last step
        // stops at tmax, so the ground in front of a landmark's foot is still found.
        float slope = length(p.xz) > RING - 10.0 ? 1.0 : 0.2;
        float closing = max(slope * horizontal - rd.y, 0.02);
        last_t = t;
        last_gap = gap;
        t = min(t + max(gap / closing, 0.01 + 0.002 * t), tmax);
        p = ro + rd * t;
        gap = p.y - ground(p.xz, 3);
    }
    bool converged = gap < 0.002 * t;
    if (!converged && (t >= tmax || (ro + rd * t).y > TOP)) return -1.0;
    if (!crossed) return t;  // converged, or out of steps close enough at this range
    // Crossed the surface between last_t and t: two steps of regula falsi.
    float a = last_t, ga = last_gap, b = t, gb = gap;
    for (int j = 0; j < 2; j++) {
        float m = a + (b - a) * ga / (ga - gb);
        vec3 q = ro + rd * m;
        float gm = q.y - ground(q.xz, 3);
        bool above = gm > 0.0;
        a = above ? m : a;
        ga = above ? gm : ga;
        b = above ? b : m;
        gb = above ? gb : gm;
    }
    return a + (b - a) * ga / (ga - gb);
}

float ground_shadow(vec3 p) {  // soft shadow of the terrain itself, 1 = lit
    float lit = 1.0, t = 0.3;
    for (int i = 0; i < SHADOW_STEPS; i++) {
        vec3 q = p + SUN * t;
        float gap = q.y - ground(q.xz, 2);
        lit = min(lit, 6.0 * gap / t);
        if (lit < 0.0 || q.y > TOP) break;
        t += clamp(gap, 1.0, 20.0);
    }
    return clamp(lit, 0.0, 1.0);
}

// ---- landmarks (analytic) ---------------------------------------------------------------------

float hit_pillar(vec3 ro, vec3 rd, vec4 s, out vec3 n) {  // vertical cylinder, radius s.z, top s.w
    vec2 oc = ro.xz - s.xy;
    float c = dot(oc, oc) - s.z * s.z;
    float a = max(dot(rd.xz, rd.xz), 1e-12), b = dot(oc, rd.xz);
    float h = b * b - a * c;
    float root = sqrt(max(h, 0.0));
    float t = (-b - root) / a;
    float y = ro.y + rd.y * t;
    float t_cap = rd.y < 0.0 ? (s.w - ro.y) / rd.y : -1.0;  // entered above the top: the cap?
    bool side = y <= s.w && y > BASE;
    bool cap = y > s.w && t_cap > 0.0 && t_cap < (-b + root) / a;
    n = side ? vec3((oc.x + rd.x * t) / s.z, 0.0, (oc.y + rd.z * t) / s.z) : vec3(0.0, 1.0, 0.0);
    // Seen from inside it is not drawn; missing the infinite cylinder misses the cap too.
    bool hit = c > 0.0 && h > 0.0 && t > 0.0 && (side || cap);
    return hit ? (side ? t : t_cap) : -1.0;
}

float hit_ball(vec3 ro, vec3 rd, vec4 s, out vec3 n) {  // sphere, radius s.z, centre height s.w
    vec3 oc = ro - vec3(s.x, s.w, s.y);
    float b = dot(oc, rd), c = dot(oc, oc) - s.z * s.z;
    float h = b * b - c;
    float t = -b - sqrt(max(h, 0.0));
    n = (oc + rd * t) / s.z;
    return h > 0.0 && c > 0.0 && t > 0.0 ? t : -1.0;
}

float hit_block(vec3 ro, vec3 rd, vec4 s, out vec3 n) {  // box, half width s.z, top s.w
    float half_height = 0.5 * (s.w - BASE);
    vec3 o = ro - vec3(s.x, BASE + half_height, s.y);
    vec3 inv = 1.0 / rd;
    vec3 k = abs(inv) * vec3(s.z, half_height, s.z);
    vec3 t1 = -inv * o - k, t2 = -inv * o + k;
    float tn = max(max(t1.x, t1.y), t1.z);
    float tf = min(min(t2.x, t2.y), t2.z);
    n = -sign(rd) * step(t1.yzx, t1.xyz) * step(t1.zxy, t1.xyz);
    return tn < tf && tn > 0.0 ? tn : -1.0;
}

// Nearest landmark along the ray within tmax: distance (or tmax), its normal and index (or -1).
float trace_landmarks(vec3 ro, vec3 rd, float tmax, out vec3 n, out int id) {
    float best = tmax;
    id = -1;
    n = vec3(0.0, 1.0, 0.0);
    vec3 ni;
    for (int i = 0; i < u_pillars; i++) {
        float t = hit_pillar(ro, rd, u_landmark_shape[i], ni);
        bool nearer = t > 0.0 && t < best;
        best = nearer ? t : best; n = nearer ? ni : n; id = nearer ? i : id;
    }
    for (int i = u_pillars; i < u_balls; i++) {
        float t = hit_ball(ro, rd, u_landmark_shape[i], ni);
        bool nearer = t > 0.0 && t < best;
        best = nearer ? t : best; n = nearer ? ni : n; id = nearer ? i : id;
    }
    for (int i = u_balls; i < u_landmarks; i++) {
        float t = hit_block(ro, rd, u_landmark_shape[i], ni);
        bool nearer = t > 0.0 && t < best;
        best = nearer ? t : best; n = nearer ? ni : n; id = nearer ? i : id;
    }
    return best;
}

float occlusion(vec3 p, vec4 s, float reach) {  // darkens the ground at the foot of a landmark
    float gap = max(length(p.xz - s.xy) - s.z, 0.0);
    return reach > 0.0 ? mix(0.45, 1.0, smoothstep(0.0, 1.6 * s.z + 0.2 * reach, gap)) : 1.0;
}

// Sunlight (x, 0 in a landmark's shadow) and ambient occlusion (y) that landmarks give p.
vec2 landmark_shade(vec3 p) {
    vec2 shade = vec2(1.0);
    vec3 n;
    for (int i = 0; i < u_pillars; i++) {
        vec4 s = u_landmark_shape[i];
        shade *= vec2(hit_pillar(p, SUN, s, n) > 0.0 ? 0.0 : 1.0, occlusion(p, s, s.w - p.y));
    }
    for (int i = u_pillars; i < u_balls; i++) {
        vec4 s = u_landmark_shape[i];
        shade *= vec2(hit_ball(p, SUN, s, n) > 0.0 ? 0.0 : 1.0, occlusion(p, s, s.w - s.z - p.y));
    }
    for (int i = u_balls; i < u_landmarks; i++) {
        vec4 s = u_landmark_shape[i];
        shade *= vec2(hit_block(p, SUN, s, n) > 0.0 ? 0.0 : 1.0, occlusion(p, s, s.w - p.y));
    }
    return shade;
}

// ---- materials and light ----------------------------------------------------------------------

vec3 sky(vec3 ro, vec3 rd) {
    float up = max(rd.y, 0.0);
    vec3 col = mix(SKY_HORIZON, SKY_ZENITH, pow(up, 0.55));
    float sun = max(dot(rd, SUN), 0.0);
    col += vec3(0.9, 0.65, 0.40) * (0.22 * pow(sun, 6.0) + 0.5 * pow(sun, 80.0));
    // Clouds on a plane 300 units up: they drift past as the walker moves.
    vec2 uv = ro.xz + rd.xz * ((300.0 - ro.y) / max(rd.y, 0.005));
    float cover = smoothstep(0.42, 0.72, fbm(uv * 0.004 + 3.0, 4)) * smoothstep(0.005, 0.12, rd.y);
    vec3 cloud = mix(vec3(0.62, 0.66, 0.74), vec3(1.05, 1.02, 0.98), smoothstep(0.1, 0.6, cover));
    col = mix(col, cloud, cover);
    return mix(col, vec3(4.0, 3.6, 3.0), smoothstep(0.99955, 0.9998, sun));  // the sun's disc
}

vec3 fog(vec3 col, float t, vec3 rd) {
    float amount = 1.0 - exp(-t * 0.0042);
    vec3 haze = mix(SKY_HORIZON * 1.02, vec3(0.95, 0.82, 0.62), 0.4 * pow(max(dot(rd, SUN), 0.0), 6.0));
    return mix(col, haze, amount);
}

float detail(vec2 p, float footprint) {  // grass texture in about [-1, 1], faded where it would alias
    float s = 0.0, freq = 0.8, amp = 0.5;
    for (int i = 0; i < 4; i++) {
        float keep = clamp(1.5 - 3.0 * footprint * freq, 0.0, 1.0);
        float v = vnoise(p * freq + float(i) * 17.0);
        s += amp * keep * (i < 2 ? 2.0 * v - 1.0 : 1.0 - 4.0 * abs(v - 0.5));  // tufts up close
        freq *= 2.6;
        amp *= 0.9;
    }
    return s;
}

vec3 ground_albedo(vec3 p, vec3 n, float footprint) {
    vec2 q = p.xz;
    float lushness = fbm(q * 0.05 + 5.0, 3);
    float lush = smoothstep(0.38, 0.50, lushness);
    vec3 col = mix(vec3(0.26, 0.23, 0.045), vec3(0.035, 0.15, 0.02), lush);  // dry to lush grass
    // Flower meadows on low, level ground, yellow or violet by region, speckled up close.
    float meadow = smoothstep(0.68, 0.72, vnoise(q * 0.11 + 60.0)) * smoothstep(0.85, 0.95, n.y)
        * smoothstep(6.0, 2.0, p.y);
    float speckle = smoothstep(0.45, 0.7, vnoise(q * 7.0 + 9.0));
    float flowers = meadow * mix(0.45, speckle, clamp(1.5 - 20.0 * footprint, 0.0, 1.0));
    vec3 bloom = lushness > 0.47 ? vec3(0.60, 0.42, 0.03) : vec3(0.36, 0.07, 0.32);
    col = mix(col, bloom, flowers);
    // Dirt trails wind across the land where a slow noise crosses one half.
    float trail = abs(fbm(q * 0.02 + 21.0, 2) - 0.375);
    col = mix(col, vec3(0.22, 0.13, 0.06), smoothstep(0.012, 0.006, trail));
    // Stones on a 2.5-unit grid: fixed marks that show parallax when walking.
    ivec2 cell = ivec2(floor(q / 2.5));
    vec2 centre = (vec2(cell) + 0.2 + 0.6 * vec2(hash01(cell + 101), hash01(cell + 202))) * 2.5;
    float size = 0.15 + 0.3 * hash01(cell + 404);
    float stone = step(0.72, hash01(cell + 303)) * smoothstep(size, size - 0.06, length(q - centre));
    col = mix(col, vec3(0.30, 0.29, 0.27), stone * clamp(1.5 - 4.0 * footprint, 0.0, 1.0));
    col = mix(col, vec3(0.16, 0.15, 0.14), smoothstep(0.80, 0.62, n.y));  // rock on steep slopes
    col = mix(vec3(0.50, 0.42, 0.24), col, smoothstep(WATER + 0.25, WATER + 0.9, p.y));  // beaches
    col = mix(col, vec3(0.85, 0.88, 0.95), smoothstep(34.0, 40.0, p.y + 6.0 * n.y));  // snow
    return col * (1.0 + 0.7 * detail(q, footprint));
}

vec3 landmark_albedo(int i, vec3 p, vec3 n) {
    vec4 s = u_landmark_shape[i];
    // Pillars: horizontal stripes and a light cap. Balls: eight segments like a beach ball.
    // Blocks: a light frame around each face.
    float stripes = n.y > 0.5 ? 1.0 : step(0.5, fract((s.w - p.y) * 0.5));
    float segments = step(0.5, fract(atan(n.z, n.x) * (4.0 / 6.2831853)));
    vec2 l = abs(p.xz - s.xy);
    float frame = max(min(l.x, l.y) > s.z - 0.25 ? 1.0 : 0.0, step(s.w - 0.25, p.y));
    float band = i < u_pillars ? stripes : i < u_balls ? segments : frame;
    vec3 base = u_landmark_color[i];
    vec3 light_band = dot(base, vec3(0.3, 0.6, 0.1)) > 0.5 ? vec3(0.05, 0.05, 0.06) : vec3(0.80, 0.78, 0.74);
    return mix(base, light_band, band * 0.85);
}

vec3 light(vec3 n, vec3 rd, vec3 albedo, float shadow, float ao, float shine) {
    float diffuse = max(dot(n, SUN), 0.0) * shadow;
    float skylight = (0.55 + 0.45 * n.y) * ao;
    float bounce = (clamp(-n.y, 0.0, 1.0) * 0.2 + clamp(1.0 - n.y, 0.0, 1.0) * 0.08) * ao;
    vec3 col = albedo * (SUN_COLOR * diffuse + vec3(0.36, 0.46, 0.62) * skylight + vec3(0.3, 0.25, 0.15) * bounce);
    float spec = pow(max(dot(reflect(rd, n), SUN), 0.0), 24.0);
    return col + shine * spec * shadow * SUN_COLOR;
}

// ---- the picture ------------------------------------------------------------------------------

vec3 render(vec3 ro, vec3 rd, float fx) {
    // 1. Find the surface: the nearest of landmarks, ground and lake water.
    float gap0 = ro.y - ground(ro.xz, 3);
    vec3 n_mark;
    int id;
    float t_mark = trace_landmarks(ro, rd, FAR, n_mark, id);
    float t_ground = march_ground(ro, rd, t_mark, gap0);
    float t_water = rd.y < 0.0 && ro.y > WATER ? (WATER - ro.y) / rd.y : -1.0;
    bool on_ground = t_ground > 0.0 && (t_water < 0.0 || t_ground < t_water);
    bool on_water = !on_ground && t_water > 0.0 && t_water < t_mark;
    bool on_mark = !on_ground && !on_water && id >= 0;
    bool on_sky = !(on_ground || on_water || on_mark);
    float t = on_ground ? t_ground : on_water ? t_water : on_mark ? t_mark : FAR;
    vec3 p = ro + rd * t;

    // 2. Its normal: the ground's by finite differences, ripples on water, or the landmark's.
    float e = 0.02 + 0.002 * t;
    float h = ground(p.xz, 4);
    vec3 n_ground = normalize(vec3(h - ground(p.xz + vec2(e, 0.0), 4), e, h - ground(p.xz + vec2(0.0, e), 4)));
    float w0 = vnoise(p.xz * 0.9), wx = vnoise(p.xz * 0.9 + vec2(0.15, 0.0)), wz = vnoise(p.xz * 0.9 + vec2(0.0, 0.15));
    vec3 n_water = normalize(vec3((w0 - wx) * 2.3, 1.0, (w0 - wz) * 2.3) * vec3(exp(-0.02 * t), 1.0, exp(-0.02 * t)));
    vec3 n = on_ground ? n_ground : on_water ? n_water : n_mark;

    // 3. Light: sun with shadows, sky light with occlusion; water mirrors the sky.
    vec2 shade = landmark_shade(p + n * 0.05);
    float shadow = shade.x * (on_ground ? ground_shadow(p + n * 0.05) : 1.0);
    // Ground units per pixel: the geometric mean of across (t / fx) and along the view (more by
    // 1 / |rd.y| on level ground), so texture fades out before it flickers, but not much sooner.
    float footprint = t / (fx * max(sqrt(abs(rd.y)), 0.2));
    float ao = on_mark ? mix(0.5, 1.0, smoothstep(0.0, 2.5, p.y - h)) : shade.y;
    vec3 albedo = on_ground ? ground_albedo(p, n, footprint) : landmark_albedo(max(id, 0), p, n);
    vec3 col = light(n, rd, albedo, shadow, ao, on_mark ? 0.25 : 0.0);
    vec3 mirror = reflect(rd, n);
    vec3 sky_col = sky(on_water ? p : ro, on_water ? mirror : rd);
    float fresnel = 0.04 + 0.96 * pow(1.0 - max(dot(-rd, n), 0.0), 5.0);
    vec3 deep = mix(vec3(0.06, 0.16, 0.16), vec3(0.015, 0.06, 0.12), clamp((WATER - h) * 0.5, 0.0, 1.0));
    vec3 water = mix(deep * (0.5 + 0.5 * shadow), sky_col, fresnel)
        + SUN_COLOR * pow(max(dot(mirror, SUN), 0.0), 120.0) * shadow * 2.0;
    col = on_water ? water : col;

    // 4. Haze with distance; the sky as is; inside the ground (camera below it), dark earth.
    col = on_sky ? sky_col : fog(col, t, rd);
    vec3 earth = vec3(0.22, 0.13, 0.07) * exp(0.3 * gap0) * (0.8 + 0.2 * rd.y);
    return gap0 < 0.0 ? earth : col;
}

void main() {
    // Pixel centres at integer coordinates, row 0 at the top (GL counts rows from the bottom).
    vec2 pixel = vec2(gl_FragCoord.x - 0.5, u_resolution.y - gl_FragCoord.y - 0.5);
    vec3 ray_camera = vec3((pixel - u_intrinsics.zw) / u_intrinsics.xy, 1.0);
    vec3 ray_world = u_rotation * ray_camera;
    // World (y down) to scene frame (y up).
    vec3 ro = u_position * vec3(1.0, -1.0, 1.0);
    vec3 rd = normalize(ray_world * vec3(1.0, -1.0, 1.0));
    vec3 col = render(ro, rd, u_intrinsics.x);
    col = col / (1.0 + 0.15 * col);  // soft shoulder for the sun and highlights
    f_color = vec4(pow(clamp(col, 0.0, 1.0), vec3(1.0 / 2.2)), 1.0);
}

#endif
