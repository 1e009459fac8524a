"""Video2World from Python: make a clip with the Text2World demo model, then continue its last 9
frames with the Video2World demo model (swap in "Cosmos-1.0-Diffusion-7B-Video2World" and your own
video on a GPU).

    python examples/video2world.py     # writes start.mp4 and continued.mp4 (+ .json sidecars)
"""

from nemo_cosmos import Text2WorldPipeline, Video2WorldPipeline

prompt = "a red circle moving up"
start = Text2WorldPipeline.from_pretrained("cosmos-demo")(prompt, seed=3)[0]
start.save("start.mp4")

pipe = Video2WorldPipeline.from_pretrained("cosmos-demo-video2world")
# a path works as well: video="start.mp4"; the last num_input_frames frames are the condition
more = pipe(prompt, video=start.frames, num_input_frames=9, seed=3)[0]
more.save("continued.mp4")
print(f"continued.mp4: {len(more.frames)} frames; the first 9 are the tokenizer's reconstruction of start.mp4's last 9")
