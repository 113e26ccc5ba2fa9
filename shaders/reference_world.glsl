// reference_world: the procedural landscape of worldwalk's ReferenceWorld, ray-marched per pixel.
//
// Inputs follow worldwalk's conventions: u_rotation and u_position are the camera-to-world pose
// (OpenCV camera: x right, y down, z forward; world y points DOWN), u_intrinsics the pixel
// intrinsics with pixel centres at integer coordinates and row 0 at the top. Inside this file the
// scene is built in the "scene frame" (x, -y, z) so heights read upwards: the camera at the origin
// stands 1.5 above a flat meadow, hills never reach eye level within ~110 units, water fills the
// basins, mountains ring the horizon, and seeded landmarks (striped pillars, floating balls, blocks)
// stand around the spawn point. The landmarks are ray-traced analytically; only the terrain is
// marched, with a step bounded by the terrain's slope so at most MARCH_STEPS samples reach the
// horizon. Everything depends on u_seed only through integer hashing, so a seed gives one world.

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
#define SHADOW_STEPS 10
#endif
#define MAX_LANDMARKS 16

uniform mat3 u_rotation;    // camera-to-world rotation (world y down)
uniform vec3 u_position;    // camera centre in the world (world y down)
uniform vec4 u_intrinsics;  // fx, fy, cx, cy in pixels
uniform vec2 u_resolution;  // width, height in pixels
uniform uint u_seed;
uniform int u_landmark_count;
uniform vec4 u_landmark_shape[MAX_LANDMARKS];  // x, z, size, top (scene frame: y up)
uniform vec4 u_landmark_color[MAX_LANDMARKS];  // rgb (linear), kind: 0 pillar, 1 ball, 2 block

out vec4 f_color;

const float GROUND = -1.5;       // meadow level around the spawn point
const float WATER = -4.2;        // lakes fill the basins below this level
const float FAR = 420.0;
const float TOP = 75.0;          // nothing of the terrain rises above this
const vec3 SUN = vec3(0.4794, 0.5793, -0.6592);  // unit; behind-right of the spawn view, 35 deg up
const vec3 SUN_COLOR = vec3(1.35, 1.20, 0.98);
const vec3 SKY_ZENITH = vec3(0.13, 0.28, 0.66);
const vec3 SKY_HORIZON = vec3(0.60, 0.72, 0.86);
const mat2 OCTAVE = mat2(1.6, 1.2, -1.2, 1.6);  // rotate and double, decorrelates octaves

// ---- noise ------------------------------------------------------------------------------------

uint hash(ivec2 c) {
    uvec2 q = uvec2(c) * uvec2(1597334677u, 3812015801u);
    uint n = (q.x ^ q.y ^ (u_seed * 2654435769u + 0x9e3779b9u)) * 1597334677u;
    n ^= n >> 16;
    n *= 0x7feb352du;
    n ^= n >> 15;
    return n;
}

float hash01(ivec2 c) { return float(hash(c) >> 8) * (1.0 / 16777216.0); }

float vnoise(vec2 x) {  // value noise in [0, 1]
    ivec2 i = ivec2(floor(x));
    vec2 f = fract(x);
    vec2 u = f * f * (3.0 - 2.0 * f);
    float a = hash01(i), b = hash01(i + ivec2(1, 0));
    float c = hash01(i + ivec2(0, 1)), d = hash01(i + ivec2(1, 1));
    return mix(mix(a, b, u.x), mix(c, d, u.x), u.y);
}

float fbm(vec2 x, int octaves) {  // in [0, 1 - 2^-octaves], mean near half of that
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

const float NEAR_TOP = GROUND + 0.7;  // the hills' soft cap: no ground above this inside RING
const float RING = 125.0;  // where the mountains begin

float ground(vec2 p, int octaves) {  // scene-frame height of the ground at p = (x, z)
    float r = length(p);
    float relief = 11.0 * (fbm(p * 0.016 + 11.0, octaves) - 0.48);  // rolling downs and basins
    relief = smin(relief, 0.7, 1.5);  // hilltops stay under eye level: the walker never sinks in
    float h = GROUND + smoothstep(7.0, 45.0, r) * relief;
    float ring = smoothstep(RING, 230.0, r);  // mountains close the world beyond ~130 units
    if (ring > 0.0) {
        float ridge = 1.0 - abs(2.0 * fbm(p * 0.012 + 40.0, 3) - 0.9);
        h += ring * (8.0 + 62.0 * ridge * ridge);
    }
    return h;
}

vec3 ground_normal(vec2 p, float t) {
    float e = 0.02 + 0.002 * t;
    float h = ground(p, 4);
    return normalize(vec3(h - ground(p + vec2(e, 0.0), 4), e, h - ground(p + vec2(0.0, e), 4)));
}

float march_ground(vec3 ro, vec3 rd, float tmax) {  // distance to the ground, or -1
    float horizontal = length(rd.xz);
    float t = 0.0;
    if (rd.y >= 0.0 && ro.y > NEAR_TOP) {
        // Above every hill and not descending: nothing to hit before the mountains.
        float b = dot(ro.xz, rd.xz), c = dot(ro.xz, ro.xz) - RING * RING;
        if (c < 0.0) t = (-b + sqrt(b * b - horizontal * horizontal * c)) / max(horizontal * horizontal, 1e-12);
    }
    float last_t = t, last_gap = ro.y + rd.y * t - ground(ro.xz + rd.xz * t, 3);
    for (int i = 0; i < MARCH_STEPS; i++) {
        vec3 p = ro + rd * t;
        if (t > tmax || (p.y > TOP && rd.y >= 0.0)) return -1.0;
        float gap = p.y - ground(p.xz, 3);
        if (gap < 0.0) return last_t + (t - last_t) * last_gap / (last_gap - gap);
        if (gap < 0.001 * t) return t;
        // The gap closes at most at slope * horizontal - rd.y per unit of t: a safe step.
        float slope = length(p.xz) > RING - 10.0 ? 1.4 : 0.55;
        float closing = max(slope * horizontal - rd.y, 0.02);
        last_t = t;
        last_gap = gap;
        t += max(0.9 * gap / closing, 0.01 + 0.002 * t);
    }
    return t < tmax ? t : -1.0;  // out of steps: close enough to the surface at this range
}

float ground_shadow(vec3 p) {  // soft shadow of the terrain itself, 1 = lit
    float lit = 1.0, t = 0.3;
    for (int i = 0; i < SHADOW_STEPS; i++) {
        vec3 q = p + SUN * t;
        float gap = q.y - ground(q.xz, 3);
        lit = min(lit, 8.0 * gap / t);
        if (lit < 0.0 || q.y > TOP) break;
        t += clamp(gap, 0.5, 12.0);
    }
    return clamp(lit, 0.0, 1.0);
}

// ---- landmarks (analytic) ---------------------------------------------------------------------

const float BASE = -60.0;  // landmarks reach down below any valley floor

float hit_pillar(vec3 ro, vec3 rd, vec4 s, out vec3 n) {  // vertical cylinder, radius s.z, top s.w
    vec2 oc = ro.xz - s.xy;
    float c = dot(oc, oc) - s.z * s.z;
    float a = dot(rd.xz, rd.xz), b = dot(oc, rd.xz);
    float h = b * b - a * c;
    // Seen from inside it is not drawn; missing the infinite cylinder misses the cap too.
    if (c < 0.0 || h < 0.0 || a < 1e-8) return -1.0;
    float t = (-b - sqrt(h)) / a;
    if (t < 0.0) return -1.0;
    float y = ro.y + rd.y * t;
    if (y <= s.w) {
        n = vec3((oc.x + rd.x * t) / s.z, 0.0, (oc.y + rd.z * t) / s.z);
        return y > BASE ? t : -1.0;
    }
    float t_cap = rd.y < 0.0 ? (s.w - ro.y) / rd.y : -1.0;  // entered above the top: the cap?
    if (t_cap > 0.0 && t_cap < (-b + sqrt(h)) / a) {
        n = vec3(0.0, 1.0, 0.0);
        return t_cap;
    }
    return -1.0;
}

float hit_ball(vec3 ro, vec3 rd, vec4 s, out vec3 n) {  // sphere, radius s.z, centre height s.w
    vec3 oc = ro - vec3(s.x, s.w, s.y);
    float b = dot(oc, rd), c = dot(oc, oc) - s.z * s.z;
    float h = b * b - c;
    if (h < 0.0 || c < 0.0) return -1.0;
    float t = -b - sqrt(h);
    if (t < 0.0) return -1.0;
    n = (oc + rd * t) / s.z;
    return t;
}

float hit_block(vec3 ro, vec3 rd, vec4 s, out vec3 n) {  // box, half width s.z, top s.w
    float half_height = 0.5 * (s.w - BASE);
    vec3 size = vec3(s.z, half_height, s.z);
    vec3 o = ro - vec3(s.x, BASE + half_height, s.y);
    vec3 inv = 1.0 / rd;
    vec3 k = abs(inv) * size;
    vec3 t1 = -inv * o - k, t2 = -inv * o + k;
    float tn = max(max(t1.x, t1.y), t1.z);
    float tf = min(min(t2.x, t2.y), t2.z);
    if (tn > tf || tn < 0.0) return -1.0;
    n = -sign(rd) * step(t1.yzx, t1.xyz) * step(t1.zxy, t1.xyz);
    return tn;
}

float hit_landmark(int i, vec3 ro, vec3 rd, out vec3 n) {
    vec4 s = u_landmark_shape[i];
    int kind = int(u_landmark_color[i].w);
    if (kind == 0) return hit_pillar(ro, rd, s, n);
    if (kind == 1) return hit_ball(ro, rd, s, n);
    return hit_block(ro, rd, s, n);
}

float trace_landmarks(vec3 ro, vec3 rd, float tmax, out vec3 n, out int id) {
    float best = tmax;
    id = -1;
    for (int i = 0; i < u_landmark_count; i++) {
        vec3 ni;
        float t = hit_landmark(i, ro, rd, ni);
        if (t > 0.0 && t < best) {
            best = t;
            n = ni;
            id = i;
        }
    }
    return best;
}

// Shadow (x, 0 = in a landmark's shadow) and ambient occlusion (y) that landmarks cast on p.
vec2 landmark_shade(vec3 p) {
    const vec2 sun_xz = vec2(0.4794, -0.6592) / 0.8151;  // SUN across the ground, unit length
    vec2 shade = vec2(1.0);
    for (int i = 0; i < u_landmark_count; i++) {
        vec4 s = u_landmark_shape[i];
        vec2 d = s.xy - p.xz;
        bool ball = int(u_landmark_color[i].w) == 1;
        float below = ball ? s.w - s.z - p.y : s.w - p.y;  // how far the landmark reaches above p
        if (below > 0.0) {
            float gap = max(length(d) - s.z, 0.0);
            shade.y *= mix(0.45, 1.0, smoothstep(0.0, 1.6 * s.z + 0.2 * below, gap));
        }
        // Only a landmark near the line from p toward the sun can shadow it.
        float across = abs(d.x * sun_xz.y - d.y * sun_xz.x);
        float reach = ball ? s.z : 1.42 * s.z;  // a block's half diagonal
        if (across < reach && dot(d, sun_xz) > -reach) {
            vec3 n;
            if (hit_landmark(i, p, SUN, n) > 0.0) shade.x = 0.0;
        }
    }
    return shade;
}

// ---- materials and light ----------------------------------------------------------------------

vec3 sky(vec3 ro, vec3 rd) {
    float up = max(rd.y, 0.0);
    vec3 col = mix(SKY_HORIZON, SKY_ZENITH, pow(up, 0.55));
    float sun = max(dot(rd, SUN), 0.0);
    col += vec3(0.9, 0.65, 0.40) * (0.22 * pow(sun, 6.0) + 0.5 * pow(sun, 80.0));
    if (rd.y > 0.005) {  // clouds on a plane 300 units up: they drift past as the walker moves
        vec2 uv = ro.xz + rd.xz * ((300.0 - ro.y) / rd.y);
        float cover = smoothstep(0.42, 0.72, fbm(uv * 0.004 + 3.0, 4));
        vec3 cloud = mix(vec3(0.62, 0.66, 0.74), vec3(1.05, 1.02, 0.98), smoothstep(0.3, 0.9, cover));
        col = mix(col, cloud, cover * smoothstep(0.005, 0.12, rd.y));
    }
    col = mix(col, vec3(4.0, 3.6, 3.0), smoothstep(0.99955, 0.9998, sun));  // the sun's disc
    return col;
}

vec3 fog(vec3 col, float t, vec3 rd) {
    float amount = 1.0 - exp(-t * 0.0075);
    vec3 haze = mix(SKY_HORIZON * 1.02, vec3(0.95, 0.82, 0.62), 0.4 * pow(max(dot(rd, SUN), 0.0), 6.0));
    return mix(col, haze, amount);
}

float detail(vec2 p, float footprint) {  // ground texture in [-1, 1], faded where it would alias
    float s = 0.0, freq = 0.7, amp = 1.0;
    for (int i = 0; i < 4; i++) {
        float keep = clamp(1.5 - 3.0 * footprint * freq, 0.0, 1.0);
        s += amp * keep * (2.0 * vnoise(p * freq + float(i) * 17.0) - 1.0);
        freq *= 2.7;
        amp *= 0.6;
    }
    return s;
}

vec3 ground_albedo(vec3 p, vec3 n, float footprint) {
    vec2 q = p.xz;
    float lush = smoothstep(0.32, 0.62, fbm(q * 0.045 + 5.0, 3));
    vec3 col = mix(vec3(0.20, 0.22, 0.035), vec3(0.045, 0.16, 0.025), lush);  // dry to lush grass
    float flowers = smoothstep(0.6, 0.75, vnoise(q * 0.35 + 60.0));
    bool yellow = hash01(ivec2(floor(q * 0.07))) > 0.5;
    vec3 bloom = yellow ? vec3(0.55, 0.40, 0.03) : vec3(0.35, 0.05, 0.30);
    col = mix(col, bloom, 0.6 * flowers * lush);
    float dirt = smoothstep(0.58, 0.66, fbm(q * 0.03 + 31.0, 2));  // bare earth patches and paths
    col = mix(col, vec3(0.20, 0.11, 0.05), dirt);
    col = mix(col, vec3(0.16, 0.15, 0.14), smoothstep(0.80, 0.62, n.y));  // rock on steep slopes
    col = mix(vec3(0.50, 0.42, 0.24), col, smoothstep(WATER + 0.25, WATER + 0.9, p.y));  // beaches
    col = mix(col, vec3(0.85, 0.88, 0.95), smoothstep(40.0, 48.0, p.y + 6.0 * n.y));  // snow
    // Stones scattered on a 3-unit grid: fixed marks that show parallax when walking.
    ivec2 cell = ivec2(floor(q / 3.0));
    vec2 centre = (vec2(cell) + vec2(hash01(cell + 101), hash01(cell + 202))) * 3.0;
    float stone = step(0.82, hash01(cell + 303)) * smoothstep(0.38, 0.30, length(q - centre));
    col = mix(col, vec3(0.28, 0.27, 0.25), stone * clamp(1.5 - 3.0 * footprint, 0.0, 1.0));
    return col * (1.0 + 0.45 * detail(q, footprint));
}

vec3 landmark_albedo(int i, vec3 p, vec3 n) {
    vec4 s = u_landmark_shape[i];
    vec3 base = u_landmark_color[i].rgb;
    int kind = int(u_landmark_color[i].w);
    float band;
    if (kind == 0) {  // pillars: horizontal stripes, and a white cap
        band = step(0.5, fract((s.w - p.y) * 0.5));
        if (n.y > 0.5) band = 1.0;
    } else if (kind == 1) {  // balls: eight segments like a beach ball
        band = step(0.5, fract(atan(n.z, n.x) * (4.0 / 6.2831853)));
    } else {  // blocks: a light frame around each face
        vec3 l = abs(p - vec3(s.x, p.y, s.y));
        float edge = max(max(l.x, l.z) > s.z - 0.25 && min(l.x, l.z) > s.z - 0.25 ? 1.0 : 0.0,
                         step(s.w - 0.25, p.y));
        band = edge;
    }
    return mix(base, vec3(0.80, 0.78, 0.74), band * 0.85);
}

vec3 light(vec3 p, vec3 n, vec3 rd, vec3 albedo, float shadow, float ao, float shine) {
    float diffuse = max(dot(n, SUN), 0.0) * shadow;
    float skylight = (0.55 + 0.45 * n.y) * ao;
    float bounce = clamp(-n.y, 0.0, 1.0) * 0.2 + clamp(1.0 - n.y, 0.0, 1.0) * 0.08;
    vec3 col = albedo * (SUN_COLOR * diffuse + vec3(0.36, 0.46, 0.62) * skylight + vec3(0.3, 0.25, 0.15) * bounce * ao);
    float spec = pow(max(dot(reflect(rd, n), SUN), 0.0), 24.0);
    return col + shine * spec * shadow * SUN_COLOR;
}

// ---- the picture ------------------------------------------------------------------------------

vec3 render(vec3 ro, vec3 rd, float fx) {
    float under = ground(ro.xz, 3) - ro.y;
    if (under > 0.0) {  // the camera is inside the ground: show earth, darker the deeper it is
        return vec3(0.22, 0.13, 0.07) * exp(-0.3 * under) * (0.8 + 0.2 * rd.y);
    }
    vec3 n_mark;
    int id;
    float t_mark = trace_landmarks(ro, rd, FAR, n_mark, id);
    float t_ground = march_ground(ro, rd, t_mark);
    float t_water = rd.y < 0.0 && ro.y > WATER ? (WATER - ro.y) / rd.y : -1.0;

    vec3 col;
    float t;
    if (t_ground > 0.0 && (t_water < 0.0 || t_ground < t_water)) {
        t = t_ground;
        vec3 p = ro + rd * t;
        vec3 n = ground_normal(p.xz, t);
        float footprint = t / (fx * max(abs(rd.y), 0.08));  // ground units per pixel, along the view
        vec2 shade = landmark_shade(p + n * 0.05);
        float shadow = min(shade.x, ground_shadow(p + n * 0.05));
        col = light(p, n, rd, ground_albedo(p, n, footprint), shadow, shade.y, 0.0);
    } else if (t_water > 0.0 && t_water < t_mark) {
        t = t_water;
        vec3 p = ro + rd * t;
        float e = 0.15;
        float w0 = vnoise(p.xz * 0.9), wx = vnoise(p.xz * 0.9 + vec2(e, 0.0)), wz = vnoise(p.xz * 0.9 + vec2(0.0, e));
        float ripple = 0.35 * exp(-0.02 * t);
        vec3 n = normalize(vec3((w0 - wx) * ripple / e, 1.0, (w0 - wz) * ripple / e));
        float fresnel = 0.04 + 0.96 * pow(1.0 - max(dot(-rd, n), 0.0), 5.0);
        float shadow = landmark_shade(p).x;
        float depth = clamp((WATER - ground(p.xz, 3)) * 0.5, 0.0, 1.0);
        vec3 body = mix(vec3(0.06, 0.16, 0.16), vec3(0.015, 0.06, 0.12), depth) * (0.5 + 0.5 * shadow);
        col = mix(body, sky(p, reflect(rd, n)), fresnel);
        col += SUN_COLOR * pow(max(dot(reflect(rd, n), SUN), 0.0), 120.0) * shadow * 2.0;
    } else if (id >= 0) {
        t = t_mark;
        vec3 p = ro + rd * t;
        float shadow = landmark_shade(p + n_mark * 0.02).x;
        float ao = mix(0.5, 1.0, smoothstep(0.0, 2.5, p.y - ground(p.xz, 3)));
        col = light(p, n_mark, rd, landmark_albedo(id, p, n_mark), shadow, ao, 0.25);
    } else {
        return sky(ro, rd);
    }
    return fog(col, t, rd);
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
